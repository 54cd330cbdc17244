"""The one process runner of the tests and benchmarks: jarvis-trio (or redis-server, the
Ollama simulator...) as a real process, started until its ready line and always stopped.

:func:`open_server_process` is the runner (trio); :func:`spawn` and
:func:`running_process` are its blocking face for sync code (benchmarks, Playwright's sync
tests), the same runner under its own ``trio.run`` in a thread.
"""

from __future__ import annotations

import collections
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

KEPT_LINES = 20000  # stderr lines a ServerProcess keeps (the last ones)


@dataclass
class ServerProcess:
    process: trio.Process
    url: str
    killed: bool = False  # it did not end on SIGTERM within the grace
    output: list[str] = field(default_factory=list)  # stderr lines, the last ones kept
    # How often each log event (``ts=... level=... EVENT k=v``) was logged.
    events: collections.Counter[str] = field(default_factory=collections.Counter)

    def take(self, line: str) -> None:
        """Keep one stderr line and count its log event."""
        self.output.append(line)
        parts = line.split(" ", 3)
        if len(parts) >= 3 and parts[0].startswith("ts=") and "=" not in parts[2]:
            self.events[parts[2].rstrip()] += 1
        del self.output[:-KEPT_LINES]


@asynccontextmanager
async def open_server_process(
    argv: list[str],
    ready: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    within: float = 20.0,
    stop_grace: float = 5.0,
) -> AsyncIterator[ServerProcess]:
    """Start ``argv``; wait (at most ``within`` s) for a stderr line matching ``ready``,
    whose group 1 is the URL. stderr is drained for the process's whole life (a chatty
    server never blocks on a full pipe) and kept for the caller to read. On exit: SIGTERM,
    then SIGKILL after ``stop_grace`` s (shielded, so a failing caller still cleans up)."""
    process = await trio.lowlevel.open_process(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    server = ServerProcess(process, "")
    found = trio.Event()
    ready_seen = False

    async def drain() -> None:
        nonlocal ready_seen
        assert process.stderr is not None
        buffer = ""
        async for chunk in process.stderr:
            buffer += chunk.decode(errors="replace")
            *lines, buffer = buffer.split("\n")
            for line in lines:
                server.take(line)
                match = re.search(ready, line)
                if match and not ready_seen:
                    server.url = match.group(1)
                    ready_seen = True
                    found.set()
        found.set()  # the end of stderr: it exited (ready or not)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            try:
                with trio.fail_after(within):
                    await found.wait()
                if not ready_seen:
                    raise RuntimeError(f"{argv[:3]} exited before it was ready")
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    server.killed = await stop_process(process, grace=stop_grace)
    finally:
        if process.returncode is None:
            process.kill()


async def stop_process(process: trio.Process, *, grace: float) -> bool:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds. True when
    it had to be killed."""
    if process.returncode is None:
        process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()
        return True
    return False


@contextmanager
def spawn(
    argv: list[str],
    ready: str,
    env: dict[str, str] | None = None,
    *,
    cwd: Path | None = None,
    within: float = 30.0,
    stop_grace: float = 3.0,
) -> Iterator[ServerProcess]:
    """:func:`open_server_process` for sync code: the runner holds the process under its
    own ``trio.run`` in a thread until the block is left, then stops it there."""
    started: queue.Queue[ServerProcess | BaseException] = queue.Queue()
    leave = threading.Event()

    async def hold() -> None:
        async with open_server_process(
            argv, ready, env=env, cwd=cwd, within=within, stop_grace=stop_grace
        ) as server:
            started.put(server)
            await trio.to_thread.run_sync(leave.wait)

    def run() -> None:
        try:
            trio.run(hold)
        except BaseException as exc:  # a failed start is raised in the caller's thread
            started.put(exc)

    runner = threading.Thread(target=run, name=f"spawn {Path(argv[0]).name}", daemon=True)
    runner.start()
    got = started.get()
    if isinstance(got, BaseException):
        runner.join()
        raise got
    try:
        yield got
    finally:
        leave.set()
        runner.join()


@contextmanager
def running_process(
    argv: list[str], ready: str, env: dict[str, str] | None = None, *, within: float = 30.0
) -> Iterator[str]:
    """Start ``argv``; wait (at most ``within`` s) for a stderr line matching ``ready``.

    Yields the match's first group (a URL). On exit: SIGTERM, then SIGKILL if it does not
    end within 15 s.
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


async def redis_answers(port: int) -> bool:
    """Does a Redis on 127.0.0.1:``port`` answer PING (within 1 s)?"""
    with trio.move_on_after(1):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return False
        async with stream:
            await stream.send_all(b"PING\r\n")
            return (await stream.receive_some(64)).startswith(b"+PONG")
    return False


@asynccontextmanager
async def open_redis_server(port: int, workdir: Path) -> AsyncIterator[trio.Process]:
    """A throwaway redis-server on 127.0.0.1:``port``, without persistence, answering
    PING; stopped (SIGTERM, then SIGKILL) on exit, also when the caller fails."""
    argv = redis_argv(port, str(workdir))
    async with open_server_process(argv, r"(Ready) to accept connections", within=10) as redis:
        with trio.fail_after(10):
            while not await redis_answers(port):  # noqa: ASYNC110 - polls another process
                await trio.sleep(0.05)
        yield redis.process
