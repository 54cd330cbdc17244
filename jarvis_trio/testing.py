"""Helpers for tests and benchmarks that run jarvis-trio as real processes."""

from __future__ import annotations

import collections
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


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


@contextmanager
def running_process(
    argv: list[str], ready: str, env: dict[str, str] | None = None, *, within: float = 30.0
) -> Iterator[str]:
    """Start ``argv``; wait (at most ``within`` s) for a stderr line matching ``ready``.

    Yields the match's first group (a URL). stderr is drained for the process's
    whole life, so a chatty server never blocks on a full pipe. On exit: SIGTERM,
    then SIGKILL if it does not end within 15 s.
    """
    with spawn(argv, ready, env, within=within, stop_grace=15.0) as spawned:
        yield spawned.url


def hypercorn_argv(workers: int, port: int) -> list[str]:
    """``hypercorn -k trio -w N`` serving ``jarvis_trio.asgi:app`` on 127.0.0.1:``port``
    (settings from the environment), as the deployment guide runs it."""
    hypercorn = str(Path(sys.executable).parent / "hypercorn")
    bind = f"127.0.0.1:{port}"
    return [hypercorn, "-k", "trio", "-w", str(workers), "--graceful-timeout", "1", "--bind", bind]


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (for servers that need a number
    before they start: redis-server, hypercorn with several workers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


REDIS_SERVER = "/usr/bin/redis-server"  # Debian's package; `make redis` installs it


def redis_argv(port: int, workdir: str) -> list[str]:
    """A throwaway redis-server on 127.0.0.1:``port`` without persistence, logging to
    stderr (its ready line: ``Ready to accept connections``)."""
    return [
        REDIS_SERVER,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        "--logfile",
        "/dev/stderr",
    ]
