"""Instructions the gateway executes per relayed token, counted by callgrind.

CPU time per token (`benchmarks/throughput.py`) is what users pay, but on a shared
2-core machine one stream's figure swings by ±20 % from run to run (550 to 870 µs
for the same code, 2026-12-02), too much to see a 5 % change. Instructions do not
swing: the gateway runs under ``valgrind --tool=callgrind`` with instrumentation off
until the streams are flowing, then counts a window of user-space instructions (the
kernel's share, system calls and wake-ups, is not in it) and divides by the tokens
the clients received in it. The same code gives the same count to about 1 %.

The simulator and the clients run natively. Under valgrind the gateway is about 50
times slower, so the upstream is paced at 5 tokens/s per stream (not 50): every token
is still relayed on its own, as at full pace with one or ten streams. Counts at 100
streams would measure a saturated gateway batching tokens, so they are not taken.

``python -m benchmarks.instructions`` (``make bench-instructions``) prints both
variants at 1 and 10 streams.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import trio

from benchmarks.load import StreamCount, chat_body, run_streams, wait_started
from benchmarks.stack import BIN, SERVER_READY, SIM_READY, server_argv
from jarvis_trio.testing import spawn

MODEL = "llama3.2:1b+tokens=5000"
RATE = 5.0  # tokens/s per stream, at the simulator


@dataclass(frozen=True)
class InstructionPoint:
    variant: str
    streams: int
    tokens: int  # received by the clients within the window
    instructions: int  # the gateway's, user space, within the window

    @property
    def per_token(self) -> float:
        return self.instructions / self.tokens if self.tokens else float("nan")


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=60)


def _total(out_dir: Path) -> int:
    """The instructions of the first dump (the window; the rest is the shutdown)."""
    for path in out_dir.glob("callgrind.*.1"):
        for line in path.read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no callgrind dump in {out_dir}")


def measure(
    variant: str, streams: int, *, window: float = 10.0, env: dict[str, str] | None = None
) -> InstructionPoint:
    """Instructions per token of ``variant`` ("trio" or "asyncio") at ``streams`` streams."""
    sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
    with (
        tempfile.TemporaryDirectory(prefix="bench-callgrind-") as folder,
        spawn([*sim_argv, "--tokens-per-second", f"{RATE:g}"], SIM_READY) as sim,
    ):
        out_dir = Path(folder)
        gateway = server_argv(variant, sim.url)
        if gateway[0] != sys.executable:  # the console script: run it with this Python
            gateway = [sys.executable, *gateway]
        argv = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p",
            *gateway,
        ]
        gateway_env = {"JARVIS_MAX_STREAMS": "2048", **(env or {})}
        with spawn(argv, SERVER_READY, env=gateway_env, within=300, stop_grace=30) as server:
            pid = str(server.process.pid)
            counts = [StreamCount() for _ in range(streams)]
            bodies = [chat_body(MODEL, f"stream {i}") for i in range(streams)]
            got: list[int] = []

            async def hold() -> None:
                await wait_started(counts, within=60, quiet=5.0)
                await trio.to_thread.run_sync(_control, "-i", "on", pid)
                await trio.sleep(2)  # the first instrumented passes translate code
                await trio.to_thread.run_sync(_control, "-z", pid)
                before = sum(c.tokens for c in counts)
                await trio.sleep(window)
                await trio.to_thread.run_sync(_control, "-d", pid)
                got.append(sum(c.tokens for c in counts) - before)

            trio.run(lambda: run_streams(server.url, bodies, counts, hold=hold, http_timeout=120))
        return InstructionPoint(variant, streams, got[0], _total(out_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1,10", help="comma-separated")
    parser.add_argument("--variants", default="trio,asyncio", help="comma-separated")
    parser.add_argument("--window", type=float, default=10.0)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    print("| variant | streams | tokens | instructions per token |")
    print("|---|---|---|---|")
    for streams in (int(s) for s in args.streams.split(",")):
        for variant in args.variants.split(","):
            p = measure(variant, streams, window=args.window)
            print(f"| {variant} | {streams} | {p.tokens} | {p.per_token:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
