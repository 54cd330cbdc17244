"""Shared test helpers: deadlines, SSE parsing, bounded polling."""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx
import trio

from jarvis_trio.testing import redis_argv

P = ParamSpec("P")

# A client's tool, as the official SDKs send it; the embedded model calls it when a
# prompt says ``use add {"a": 2, "b": 3}``.
ADD: Any = {
    "type": "function",
    "function": {
        "name": "add",
        "description": "Add two numbers.",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
            "required": ["a", "b"],
        },
    },
}
T = TypeVar("T")


def deadline(seconds: float) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
    """Give an async test an absolute deadline (a hang fails, it never blocks CI)."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        @functools.wraps(fn)
        async def inner(*args: P.args, **kwargs: P.kwargs) -> T:
            with trio.fail_after(seconds):
                return await fn(*args, **kwargs)

        return inner

    return wrap


def outcome_of(chunk: dict[str, Any]) -> str:
    """How a stream ended, from its last chunk: a cut stream's ``jarvis.outcome`` (its
    ``finish_reason`` is OpenAI's ``"stop"``, checked here), else the finish_reason."""
    finish: str = chunk["choices"][0]["finish_reason"]
    outcome = (chunk.get("jarvis") or {}).get("outcome")
    if outcome is None:
        return finish
    assert finish == "stop", chunk
    return str(outcome)


async def sse_events(response: httpx.Response) -> AsyncIterator[Any]:
    """Each ``data:`` payload, parsed; ``"[DONE]"`` as the string.

    Keep the iterator in a variable while the response is open: a half-read one
    that gets collected closes the connection (httpcore closes it when its stream
    generator is closed), which the server sees as a client disconnect.
    """
    async for _, event in sse_events_with_ids(response):
        yield event


async def sse_events_with_ids(response: httpx.Response) -> AsyncIterator[tuple[str | None, Any]]:
    """Each event as (its SSE ``id:``, or None; its ``data:`` payload, parsed)."""
    current: str | None = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            current = line.removeprefix("id: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield current, (data if data == "[DONE]" else json.loads(data))
            current = None


async def read_all_events(response: httpx.Response) -> list[Any]:
    return [event async for event in sse_events(response)]


def text_of(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events
        if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


async def eventually(check: Callable[[], bool], *, within: float = 5.0) -> None:
    """Wait until ``check()`` holds: at most ``within`` seconds, 10 ms apart.

    For state of the server under test that has no event to wait on.
    """
    with trio.fail_after(within):
        while not check():  # noqa: ASYNC110 - bounded poll of another component's state
            await trio.sleep(0.01)


@dataclass
class ServerProcess:
    process: trio.Process
    url: str
    output: list[str] = field(default_factory=list)  # stderr lines so far


@asynccontextmanager
async def open_server_process(
    argv: list[str],
    ready: str,
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> AsyncIterator[ServerProcess]:
    """Start ``argv``; wait (20 s at most) for a stderr line matching ``ready``, whose
    group 1 is the URL. stderr is collected for the test to read. On exit: SIGTERM,
    then SIGKILL after 5 s (shielded, so a failing test still cleans up)."""
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

    async def drain() -> None:
        assert process.stderr is not None
        buffer = ""
        async for chunk in process.stderr:
            buffer += chunk.decode(errors="replace")
            *lines, buffer = buffer.split("\n")
            for line in lines:
                server.output.append(line)
                match = re.search(ready, line)
                if match and not found.is_set():
                    server.url = match.group(1)
                    found.set()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            try:
                with trio.fail_after(20):
                    await found.wait()
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await stop_process(process, grace=5)
    finally:
        if process.returncode is None:
            process.kill()


async def stop_process(process: trio.Process, *, grace: float) -> None:
    """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds."""
    if process.returncode is None:
        process.terminate()
    with trio.move_on_after(grace):
        await process.wait()
    if process.returncode is None:
        process.kill()
        await process.wait()


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
    """A throwaway redis-server on 127.0.0.1:``port``, without persistence; stopped
    (SIGTERM, then SIGKILL) on exit, also when the test fails."""
    argv = redis_argv(port, str(workdir))
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        with trio.fail_after(10):
            while not await redis_answers(port):
                if process.returncode is not None:
                    raise RuntimeError(f"redis-server exited ({process.returncode})")
                await trio.sleep(0.05)
        yield process
    finally:
        with trio.CancelScope(shield=True):
            await stop_process(process, grace=5)
