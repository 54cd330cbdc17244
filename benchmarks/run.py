"""Run every benchmark for both variants in one run; print the side-by-side table.

``python -m benchmarks.run --profile quick`` (``make bench``, under 3 minutes)
or ``--profile full`` (``make bench-full``, about 10). Each phase of each
variant gets a fresh simulator and server (:mod:`benchmarks.stack`), so one
variant's stuck threads never spill into the next measurement:

1. handoff and cancel latencies (:mod:`benchmarks.handoff`);
2. time to first token against the simulator called directly (:mod:`benchmarks.ttft`);
3. tokens/s and server CPU per token at each concurrency (:mod:`benchmarks.throughput`);
4. a storm of requests over few sessions (:mod:`benchmarks.storm`);
5. peak RSS with many concurrent streams (:mod:`benchmarks.memory`);
6. a supersede during an agent's slow MCP tool call (:mod:`benchmarks.agent`; its own
   gateway with the embedded model and a benchmark MCP server, no simulator).

``--phases agent`` (comma-separated names) runs only the phases named.

``--markdown FILE`` writes the results into FILE between its generated-part
markers (hand-written text around them is kept); ``--plots DIR`` writes PNGs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Never

from tqdm import tqdm

from benchmarks import agent, handoff, machine, memory, plots, report, storm, throughput, ttft
from benchmarks.report import VariantResults
from benchmarks.stack import VARIANTS, open_stack, raise_fd_limit

# Enough stream slots and worker threads for every stream of the memory phase (jarvis-trio
# only reads them): the phases measure the cost of streams, not the admission bound.
SERVER_ENV = {"JARVIS_MAX_STREAMS": "2048", "JARVIS_THREAD_LIMIT": "2048"}
# The throughput level at which new streams are probed for their first token.
PROBED_AT = 100


@dataclass(frozen=True)
class Profile:
    name: str
    handoff_rounds: int
    round_timeout: float  # s; a round without B's first token by then is "never"
    give_up_after: int  # rounds in a row without a B end a mode's run
    ttft_rounds: int
    concurrency: tuple[int, ...]
    warmup: float  # s, at most, before a throughput window
    window: float  # s, each throughput window
    storm_requests: int
    storm_sessions: int
    storm_timeout: float  # s per request
    storm_settle: float  # s the server gets to clean up after the storm
    memory_streams: int
    memory_ramp: float  # s, at most, to get every stream its first token
    agent_rounds: int
    agent_timeout: float  # s per round, each wait included
    # New streams opened one at a time while PROBED_AT streams run (their TTFT).
    probes: int = 10

    def describe(self, phases: Iterable[str] = ()) -> str:
        """The profile's counts, of the phases named (all when none are)."""
        wanted = set(phases) or set(PHASES)
        parts = {
            "handoff": f"handoff up to {self.handoff_rounds} rounds per upstream mode "
            f"({self.round_timeout:g} s per round, a mode stops after {self.give_up_after} "
            "rounds in a row without a B)",
            "ttft": f"{self.ttft_rounds} TTFT rounds",
            "throughput": f"throughput at {', '.join(map(str, self.concurrency))} streams "
            f"({self.window:g} s windows after up to {self.warmup:g} s of warm-up; then "
            f"{self.probes} new streams, one at a time, while {PROBED_AT} run)",
            "storm": f"a storm of {self.storm_requests} requests over "
            f"{self.storm_sessions} sessions",
            "memory": f"{self.memory_streams:,} streams for the memory peak",
            "agent": f"{self.agent_rounds} agent rounds ({self.agent_timeout:g} s per round, "
            f"a variant stops after {self.give_up_after} rounds in a row without a B)",
        }
        return f"`{self.name}`: " + ", ".join(v for k, v in parts.items() if k in wanted)


PROFILES = {
    "quick": Profile(
        name="quick",
        handoff_rounds=20,
        round_timeout=1.5,
        give_up_after=2,
        ttft_rounds=30,
        concurrency=(1, 10, 100, 500),
        warmup=5.0,
        window=1.5,
        storm_requests=200,
        storm_sessions=20,
        storm_timeout=10.0,
        storm_settle=11.0,
        memory_streams=300,
        memory_ramp=30.0,
        agent_rounds=10,
        agent_timeout=5.0,
    ),
    "full": Profile(
        name="full",
        handoff_rounds=200,
        round_timeout=3.0,
        give_up_after=5,
        ttft_rounds=200,
        concurrency=(1, 10, 100, 500),
        warmup=15.0,
        window=8.0,
        storm_requests=2000,
        storm_sessions=50,
        storm_timeout=30.0,
        storm_settle=12.0,
        memory_streams=1000,
        memory_ramp=60.0,
        agent_rounds=100,
        agent_timeout=5.0,
        probes=50,
    ),
}


class Bar:
    """A tqdm progress bar on stderr, one step per call; drawn only when stderr is a
    terminal. Elsewhere (a log file, CI) each bar is one line when it ends."""

    def __init__(self, desc: str, total: int, unit: str) -> None:
        self._desc, self._total, self._unit = desc, total, unit
        self._bar: tqdm[Never] = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=True,
            disable=not sys.stderr.isatty(),
        )
        self._started = time.monotonic()
        self._n = 0  # tqdm counts nothing while disabled

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar.disable:
            took = time.monotonic() - self._started
            print(
                f"{self._desc}: {self._n} of {self._total} {self._unit}s, {took:.1f} s",
                file=sys.stderr,
            )
        self._bar.close()

    def __call__(self) -> None:
        self._n += 1
        self._bar.update()

    def show(self, n: int, **postfix: object) -> None:
        self._n = n
        if self._bar.disable:
            return
        self._bar.n = n
        if postfix:
            self._bar.set_postfix(postfix)
        self._bar.refresh()


STOP_GRACE = 2.0  # s; the baseline with a blocked thread never exits on SIGTERM


def run_variant(
    variant: str,
    profile: Profile,
    phases: set[str],
    handoff_modes: Sequence[str] = handoff.MODES,
) -> VariantResults:
    """The ``phases`` of one variant (a peer too: :mod:`benchmarks.peers`)."""
    results = VariantResults(variant)
    stop_grace = STOP_GRACE

    if "handoff" in phases:
        for mode in handoff_modes:
            with (
                Bar(f"{variant} handoff {mode}", profile.handoff_rounds, "round") as bar,
                open_stack(variant, env=SERVER_ENV, stop_grace=stop_grace) as stack,
            ):
                results.handoff[mode] = handoff.run_mode(
                    stack,
                    mode,
                    profile.handoff_rounds,
                    profile.round_timeout,
                    profile.give_up_after,
                    on_round=bar,
                )
    if "ttft" in phases:
        with (
            Bar(f"{variant} TTFT", profile.ttft_rounds, "round") as bar,
            open_stack(variant, env=SERVER_ENV, stop_grace=stop_grace) as stack,
        ):
            results.ttft = ttft.measure_ttft(stack, profile.ttft_rounds, on_round=bar)
    if "throughput" in phases:
        with Bar(f"{variant} throughput", len(profile.concurrency), "level") as bar:
            for i, c in enumerate(profile.concurrency):
                bar.show(i, streams=c)
                with open_stack(variant, env=SERVER_ENV, stop_grace=stop_grace) as stack:
                    results.throughput.append(
                        throughput.measure_point(
                            stack,
                            c,
                            warmup=profile.warmup,
                            window=profile.window,
                            probes=profile.probes if c == PROBED_AT else 0,
                        )
                    )
                bar()
    if "storm" in phases:
        with (
            Bar(f"{variant} storm", profile.storm_requests, "request") as bar,
            open_stack(
                variant, tokens_per_second=200, env=storm.STORM_ENV, stop_grace=stop_grace
            ) as stack,
        ):
            results.storm = storm.run_storm(
                stack,
                requests=profile.storm_requests,
                sessions=profile.storm_sessions,
                seed=20261201,
                request_timeout=profile.storm_timeout,
                settle=profile.storm_settle,
                on_request=bar,
            )
    if "memory" in phases:
        with (
            Bar(f"{variant} memory", profile.memory_streams, "stream") as bar,
            open_stack(variant, env=SERVER_ENV, stop_grace=stop_grace) as stack,
        ):
            results.memory = memory.measure_memory(
                stack, profile.memory_streams, ramp=profile.memory_ramp, on_sample=bar.show
            )
    if "agent" in phases:
        with Bar(f"{variant} agent", profile.agent_rounds, "round") as bar:
            results.agent = agent.measure_agent(
                variant,
                profile.agent_rounds,
                profile.agent_timeout,
                profile.give_up_after,
                stop_grace=stop_grace,
                on_round=bar,
            )
    return results


PHASES = ("handoff", "ttft", "throughput", "storm", "memory", "agent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--phases", default=",".join(PHASES), help="comma-separated")
    parser.add_argument("--markdown", type=Path, help="write the results into this page")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    args = parser.parse_args(argv)
    profile = PROFILES[args.profile]
    phases = set(args.phases.split(","))
    if unknown := phases - set(PHASES):
        parser.error(f"unknown phases: {', '.join(sorted(unknown))}")
    raise_fd_limit()
    started = time.monotonic()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_rows = machine.describe()
    warning = machine.current_load_warning()
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    trio_results, asyncio_results = (run_variant(v, profile, phases) for v in VARIANTS)
    elapsed = time.monotonic() - started

    plot_rows: list[tuple[str, str]] = []
    if args.plots:
        base = args.markdown.parent if args.markdown else Path.cwd()
        written = plots.write_plots([trio_results, asyncio_results], args.plots)
        plot_rows = [(caption, os.path.relpath(p, base)) for caption, p in written]
    ctx = report.PageContext(
        title=f"Results ({profile.name} run)",
        when=when,
        profile=profile.describe(phases),
        machine=machine_rows,
        plots=plot_rows,
        elapsed_s=elapsed,
        warning=warning,
    )
    page = report.render_page(ctx, trio_results, asyncio_results)
    print(page)
    if args.markdown:
        report.write_page(args.markdown, page)
    print(f"benchmarks done in {elapsed:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
