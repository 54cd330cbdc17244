"""One variant's stack as real processes: the Ollama simulator and a gateway in front of it.

``open_stack("trio" | "asyncio")`` starts a fresh ``jarvis-trio sim-ollama`` and
then ``jarvis-trio serve --backend ollama`` (or the asyncio baseline,
``python -m benchmarks.asyncio_variant``) on ports chosen by the kernel, and
yields their URLs and the gateway's :class:`psutil.Process`, whose CPU time,
threads, descriptors and memory the benchmarks read.

Teardown is bounded: SIGTERM, then SIGKILL after ``stop_grace`` seconds. The
baseline needs the SIGKILL whenever one of its executor threads is blocked on
an upstream (``asyncio.run`` waits for those threads at exit), so a short grace
keeps a run short; :attr:`Stack.killed` says whether it was needed.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent
VARIANTS = ("trio", "asyncio")
SIM_READY = r"ollama_sim listening url=(\S+)"
SERVER_READY = r"server_listening url=(\S+)"


@dataclass
class Spawned:
    process: subprocess.Popen[str]
    url: str
    killed: bool = False  # it did not end on SIGTERM within the grace
    output: list[str] = field(default_factory=list)  # stderr lines, the last ones kept
    # How often each log event (``ts=... level=... EVENT k=v``) was logged.
    events: collections.Counter[str] = field(default_factory=collections.Counter)


@contextmanager
def spawn(
    argv: list[str],
    ready: str,
    env: dict[str, str] | None = None,
    *,
    within: float = 30.0,
    stop_grace: float = 3.0,
) -> Iterator[Spawned]:
    """Start ``argv``; wait (at most ``within`` s) for a stderr line matching ``ready``
    (group 1 is the URL). stderr is drained for the process's whole life."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: queue.Queue[str | None] = queue.Queue()
    spawned = Spawned(proc, "")

    def pump() -> None:
        assert proc.stderr is not None
        found = False
        for line in proc.stderr:
            if not found:
                lines.put(line)
                found = re.search(ready, line) is not None
            spawned.output.append(line.rstrip("\n"))
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[0].startswith("ts=") and "=" not in parts[2]:
                spawned.events[parts[2].rstrip()] += 1
            del spawned.output[:-20000]
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + within
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"{argv[:3]} exited before it was ready")
            match = re.search(ready, line)
            if match:
                spawned.url = match.group(1)
                break
        yield spawned
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_grace)
        except subprocess.TimeoutExpired:
            spawned.killed = True
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    variant: str
    url: str  # the gateway
    sim_url: str
    server: psutil.Process
    sim: psutil.Process
    spawned: Spawned
    tokens_per_second: float  # the simulator's pace, per stream

    @property
    def killed(self) -> bool:
        return self.spawned.killed


def server_argv(variant: str, sim_url: str) -> list[str]:
    if variant == "trio":
        head = [str(BIN / "jarvis-trio"), "serve"]
    elif variant == "asyncio":
        head = [sys.executable, "-m", "benchmarks.asyncio_variant"]
    else:
        raise ValueError(f"no variant {variant!r}; one of {VARIANTS}")
    return [*head, "--port", "0", "--backend", "ollama", "--ollama-url", sim_url]


@contextmanager
def open_stack(
    variant: str,
    *,
    tokens_per_second: float = 50.0,
    env: dict[str, str] | None = None,
    stop_grace: float = 3.0,
) -> Iterator[Stack]:
    """A fresh simulator and gateway; ``env`` goes to the gateway (``JARVIS_*``)."""
    sim_argv = [
        str(BIN / "jarvis-trio"),
        "sim-ollama",
        "--port",
        "0",
        "--tokens-per-second",
        f"{tokens_per_second:g}",
    ]
    with (
        spawn(sim_argv, SIM_READY) as sim,
        spawn(
            server_argv(variant, sim.url), SERVER_READY, env=env, stop_grace=stop_grace
        ) as server,
    ):
        yield Stack(
            variant,
            server.url,
            sim.url,
            psutil.Process(server.process.pid),
            psutil.Process(sim.process.pid),
            server,
            tokens_per_second,
        )


def raise_fd_limit(wanted: int = 65536) -> int:
    """Raise this process's soft descriptor limit (children inherit it); the new limit."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
