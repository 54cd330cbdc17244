"""jarvis-trio, the asyncio variant and a peer (the LiteLLM proxy) on the same simulator.

``make bench-peers`` (``python -m benchmarks.peers``) installs the proxy into its own
venv (``.venv-peers``) if it is missing, then runs, for each of the three gateways and
each phase a fresh simulator and gateway (:func:`benchmarks.stack.open_stack`):

1. client disconnect → upstream closed (the ``disconnect`` rounds of
   :mod:`benchmarks.handoff`);
2. supersede as a client sends it, counted at the simulator (:mod:`benchmarks.supersede`);
3. time to first token against the simulator called directly (:mod:`benchmarks.ttft`);
4. tokens/s and server CPU per relayed token at 1, 10 and 100 streams
   (:mod:`benchmarks.throughput`);
5. RSS while holding streams (:mod:`benchmarks.memory`);
6. the aftermath of an overload: the clients of a saturated run leave; how long until
   the simulator answers nothing (:mod:`benchmarks.aftermath`).

The counts are small (:data:`PROFILE`): the machine this was written on has 2 cores
shared with other work, and the whole run takes a few minutes. ``--markdown FILE``
writes the results into FILE between its ``benchmarks-peers`` markers (the rest of the
page is kept); ``--plots DIR`` writes ``peers-*.png``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks import aftermath, machine, plots, report, supersede
from benchmarks.report import PEERS_BEGIN, PEERS_END, VariantResults
from benchmarks.run import STOP_GRACE, Bar, Profile, run_variant
from benchmarks.stack import LITELLM, PEERS, VARIANTS, open_stack, raise_fd_limit

PROFILE = Profile(
    name="peers",
    handoff_rounds=20,
    round_timeout=1.5,
    give_up_after=2,
    ttft_rounds=30,
    concurrency=(1, 10, 100),
    warmup=5.0,
    window=1.5,
    storm_requests=0,  # no storm: the phases below are the comparison's
    storm_sessions=0,
    storm_timeout=0.0,
    storm_settle=0.0,
    memory_streams=200,
    memory_ramp=30.0,
    agent_rounds=0,
    agent_timeout=0.0,
)
SHARED_PHASES = ("handoff", "ttft", "throughput", "memory")  # run by benchmarks.run
SUPERSEDE_ROUNDS = 10
OVERLOAD = {"streams": 200, "tokens_per_second": 50.0, "ramp": 15.0, "hold": 3.0, "bound": 30.0}
# Every stream gets a slot and a reader thread in jarvis-trio, as in benchmarks.run.
SERVER_ENV = {"JARVIS_MAX_STREAMS": "2048", "JARVIS_THREAD_LIMIT": "2048"}


def describe() -> str:
    p = PROFILE
    return (
        f"`{p.name}`: client disconnect up to {p.handoff_rounds} rounds "
        f"({p.round_timeout:g} s per round, stops after {p.give_up_after} in a row without "
        f"a close), {SUPERSEDE_ROUNDS} supersede rounds, {p.ttft_rounds} TTFT rounds, "
        f"throughput at {', '.join(map(str, p.concurrency))} streams ({p.window:g} s windows "
        f"after up to {p.warmup:g} s of warm-up), {p.memory_streams} streams for the memory "
        f"peak, an overload of {OVERLOAD['streams']:g} streams at "
        f"{OVERLOAD['tokens_per_second']:g} tokens/s each, left after {OVERLOAD['hold']:g} s "
        f"(quiet watched for {OVERLOAD['bound']:g} s at most)"
    )


def run_gateway(variant: str) -> VariantResults:
    results = run_variant(variant, PROFILE, set(SHARED_PHASES), handoff_modes=("disconnect",))
    with (
        Bar(f"{variant} supersede", SUPERSEDE_ROUNDS, "round") as bar,
        open_stack(variant, env=SERVER_ENV, stop_grace=STOP_GRACE) as stack,
    ):
        results.supersede = supersede.run_supersede(
            stack, SUPERSEDE_ROUNDS, PROFILE.round_timeout, PROFILE.give_up_after, on_round=bar
        )
    streams = int(OVERLOAD["streams"])
    with (
        Bar(f"{variant} overload aftermath", streams, "stream") as bar,
        open_stack(
            variant,
            tokens_per_second=OVERLOAD["tokens_per_second"],
            env=SERVER_ENV,
            stop_grace=STOP_GRACE,
        ) as stack,
    ):
        results.aftermath = aftermath.measure_aftermath(
            stack,
            streams,
            ramp=OVERLOAD["ramp"],
            hold=OVERLOAD["hold"],
            bound=OVERLOAD["bound"],
            on_poll=bar.show,
        )
    return results


def peer_versions() -> tuple[str, str]:
    """The row naming the peer's versions, read in its own venv."""
    script = (
        "from importlib.metadata import version as v; "
        "print(', '.join(f'{n} {v(n)}' for n in ('litellm', 'fastapi', 'uvicorn', 'httpx', "
        "'aiohttp')))"
    )
    python = LITELLM.parent / "python"
    got = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return ("LiteLLM proxy (in .venv-peers, one uvicorn worker)", got.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", type=Path, help="write the results into this page")
    parser.add_argument("--plots", type=Path, help="write PNG plots into this folder")
    args = parser.parse_args(argv)
    if not LITELLM.exists():
        parser.error(f"no LiteLLM proxy at {LITELLM}: `make bench-peers` installs it")
    raise_fd_limit()
    started = time.monotonic()
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_rows = [*machine.describe(), peer_versions()]
    warning = machine.current_load_warning()
    if warning:
        print(f"WARNING: {warning}", file=sys.stderr)
    results = [run_gateway(v) for v in (*VARIANTS, *PEERS)]
    elapsed = time.monotonic() - started
    load_end = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    machine_rows.append(("load average at the end (1, 5, 15 min)", load_end))

    plot_rows: list[tuple[str, str]] = []
    if args.plots:
        base = args.markdown.parent if args.markdown else Path.cwd()
        written = plots.write_peer_plots(results, args.plots)
        plot_rows = [(caption, os.path.relpath(p, base)) for caption, p in written]
    ctx = report.PageContext(
        title="Results (peer run)",
        when=when,
        profile=describe(),
        machine=machine_rows,
        plots=plot_rows,
        elapsed_s=elapsed,
        warning=warning,
    )
    page = report.render_peers_page(ctx, results)
    print(page)
    if args.markdown:
        report.write_page(args.markdown, page, PEERS_BEGIN, PEERS_END)
    print(f"peer benchmarks done in {elapsed:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
