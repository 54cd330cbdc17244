"""Shared test helpers: deadlines, SSE parsing, bounded polling."""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import httpx
import trio

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
