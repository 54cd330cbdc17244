"""PNG plots of a run (matplotlib, Agg backend): latency CDFs, tokens/s and CPU per token.

Each function writes one file and returns its path. A CDF counts the rounds in
which the event never happened, so a curve that stays below 1 shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt

from benchmarks.report import HANDOFF_ROWS, VariantResults
from benchmarks.stats import cdf_points

COLORS = {"trio": "tab:blue", "asyncio": "tab:orange", "litellm": "tab:green"}


def _values(v: VariantResults, mode: str, what: str) -> list[float | None]:
    rounds = v.handoff.get(mode, [])
    return [r.ttft_b_ms if what == "ttft" else r.eof_ms for r in rounds]


def latency_cdfs(results: Sequence[VariantResults], path: Path) -> Path:
    fig, axes = plt.subplots(2, 3, figsize=(15, 8), constrained_layout=True)
    for ax, (name, mode, what, limit) in zip(axes.flat, HANDOFF_ROWS, strict=True):
        for v in results:
            xs, ys = cdf_points(_values(v, mode, what))
            if xs:
                ax.step(xs, ys, where="post", label=v.variant, color=COLORS.get(v.variant))
            elif v.handoff.get(mode):
                ax.plot([], [], label=f"{v.variant}: never", color=COLORS.get(v.variant))
        ax.axvline(limit, color="grey", linestyle=":", label=f"target p99 {limit:g} ms")
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("ms (log)")
        ax.set_ylabel("fraction of rounds")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def ttft_cdf(results: Sequence[VariantResults], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4.5), constrained_layout=True)
    for v in results:
        if v.ttft is None:
            continue
        for label, values, style in (
            ("direct", v.ttft.direct_ms, ":"),
            ("through the gateway", v.ttft.gateway_ms, "-"),
        ):
            xs, ys = cdf_points(values)
            if xs:
                color = COLORS.get(v.variant)
                ax.step(xs, ys, style, where="post", color=color, label=f"{v.variant}: {label}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_title("Time to first token")
    ax.set_xlabel("ms (log)")
    ax.set_ylabel("fraction of requests")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def throughput(results: Sequence[VariantResults], path: Path) -> Path:
    fig, (rate, cpu) = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for v in results:
        points = sorted(v.throughput, key=lambda p: p.concurrency)
        if not points:
            continue
        xs = [p.concurrency for p in points]
        color = COLORS.get(v.variant)
        rate.plot(xs, [p.tokens_per_s for p in points], "o-", color=color, label=v.variant)
        cpu_points = [(p.concurrency, p.cpu_us_per_token) for p in points if p.cpu_us_per_token]
        cpu.plot(*zip(*cpu_points, strict=True), "o-", color=color, label=v.variant)
    if results and results[0].throughput:
        tps = [p.concurrency for p in results[0].throughput]
        rate.set_xticks(tps)
    for ax in (rate, cpu):
        ax.set_xscale("log")
        ax.set_xlabel("concurrent streams (log)")
        ax.grid(True, alpha=0.3)
        ax.legend()
    rate.set_yscale("log")
    rate.set_ylabel("tokens/s relayed (log)")
    rate.set_title("Tokens/s against concurrency (upstream paced per stream)")
    cpu.set_ylabel("server CPU µs per relayed token")
    cpu.set_title("Server CPU per relayed token")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_plots(results: Sequence[VariantResults], directory: Path) -> list[tuple[str, Path]]:
    """Every plot, as (caption, path)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        ("Handoff and cancel latency CDFs", latency_cdfs(results, directory / "latency-cdf.png")),
        ("Time to first token CDF", ttft_cdf(results, directory / "ttft-cdf.png")),
        ("Tokens/s and CPU per token", throughput(results, directory / "throughput.png")),
    ]


def write_peer_plots(results: Sequence[VariantResults], directory: Path) -> list[tuple[str, Path]]:
    """The plots of the peer comparison (``peers-*.png``), as (caption, path)."""
    directory.mkdir(parents=True, exist_ok=True)
    return [
        (
            "Time to first token CDF, three gateways",
            ttft_cdf(results, directory / "peers-ttft-cdf.png"),
        ),
        (
            "Tokens/s and CPU per token, three gateways",
            throughput(results, directory / "peers-throughput.png"),
        ),
    ]
