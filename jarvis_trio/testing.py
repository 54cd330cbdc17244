"""Helpers for tests and benchmarks that run jarvis-trio as real processes."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def running_process(
    argv: list[str], ready: str, env: dict[str, str] | None = None, *, within: float = 30.0
) -> Iterator[str]:
    """Start ``argv``; wait (at most ``within`` s) for a stderr line matching ``ready``.

    Yields the match's first group (a URL). stderr is drained for the process's
    whole life, so a chatty server never blocks on a full pipe. On exit: SIGTERM,
    then SIGKILL if it does not end within 15 s.
    """
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        deadline = time.monotonic() + within
        while True:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                raise RuntimeError(f"{argv[0]} exited before it was ready")
            match = re.search(ready, line)
            if match:
                break
        yield match.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
