"""Shared test helpers: deadlines, SSE parsing, bounded polling."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import httpx
import trio

P = ParamSpec("P")
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


async def sse_events(response: httpx.Response) -> AsyncIterator[Any]:
    """Each ``data:`` payload, parsed; ``"[DONE]"`` as the string.

    Keep the iterator in a variable while the response is open: a half-read one
    that gets collected closes the connection (httpcore closes it when its stream
    generator is closed), which the server sees as a client disconnect.
    """
    async for line in response.aiter_lines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            yield data if data == "[DONE]" else json.loads(data)


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
