"""Many concurrent SSE streams from one trio client, each counting the tokens it receives.

Tokens are counted in the raw bytes, without parsing JSON (so the client stays
cheap at hundreds of streams): every token is one ``chat.completion.chunk``
whose delta has a non-empty ``"content"``. Both variants write its delta as
``{"content": ...}`` (:mod:`jarvis_trio.wire`), and their role chunk's content is
empty; the LiteLLM proxy puts its first token in the role chunk
(``{"role": "assistant", "content": "word"}``), which counts too.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

TOKEN_MARK = b'"delta":{"content":"'  # a token chunk of both variants
CONTENT_MARK = b'"content":"'  # a token when the next byte is not the closing quote
CHAT = "/v1/chat/completions"


@dataclass
class StreamCount:
    """What one stream has received so far (``time.monotonic()`` stamps)."""

    sent: float = 0.0
    responded: bool = False  # its response headers came
    first_token: float | None = None
    tokens: int = 0
    done: bool = False  # read to its end
    error: str | None = None

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.sent


@dataclass
class TokenCounter:
    """Counts non-empty :data:`CONTENT_MARK` across chunk boundaries: a mark at the very
    end of what came is kept back until the next byte says whether it is empty."""

    tail: bytes = b""
    count: int = field(default=0)

    def feed(self, data: bytes) -> int:
        joined = self.tail + data
        found = joined.count(CONTENT_MARK) - joined.count(CONTENT_MARK + b'"')
        if joined.endswith(CONTENT_MARK):
            found -= 1
            self.tail = CONTENT_MARK
        else:
            self.tail = joined[-(len(CONTENT_MARK) - 1) :]
        self.count += found
        return found


def started(counts: list[StreamCount]) -> int:
    return sum(c.first_token is not None for c in counts)


async def wait_started(
    counts: list[StreamCount],
    *,
    within: float,
    quiet: float,
    on_poll: Callable[[int], None] | None = None,
) -> None:
    """Wait until every stream has its first token, or none got one for ``quiet``
    seconds (a server that serves only so many at once), or ``within`` seconds."""
    with trio.move_on_after(within):
        last, since = started(counts), trio.current_time()
        while last < len(counts) and trio.current_time() - since < quiet:
            await trio.sleep(0.1)  # a bounded poll of counters the streams update
            now = started(counts)
            if on_poll:
                on_poll(now)
            if now != last:
                last, since = now, trio.current_time()


def chat_body(model: str, content: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": True}


def open_client(
    base_url: str,
    *,
    timeout: float,
    max_connections: int | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.AsyncClient:
    """By default no connection limit: every stream gets its own connection at once.
    ``headers`` go with every request (a peer's key)."""
    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=None)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits, headers=headers)


async def read_stream(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    count: StreamCount,
    *,
    headers: dict[str, str] | None = None,
    stop_after_tokens: int | None = None,
) -> None:
    """Stream ``body``; count tokens into ``count`` until the end, a cancel, or
    ``stop_after_tokens`` (then leave: a client disconnect)."""
    count.sent = time.monotonic()
    counter = TokenCounter()
    try:
        async with client.stream("POST", CHAT, json=body, headers=headers) as response:
            count.responded = True
            if response.status_code != 200:
                count.error = f"HTTP {response.status_code}"
                return
            async for data in response.aiter_raw():
                if counter.feed(data) and count.first_token is None:
                    count.first_token = time.monotonic()
                count.tokens = counter.count
                if stop_after_tokens is not None and count.tokens >= stop_after_tokens:
                    return
            count.done = True
    except httpx.HTTPError as exc:
        count.error = type(exc).__name__


async def run_streams(
    base_url: str,
    bodies: list[dict[str, Any]],
    counts: list[StreamCount],
    *,
    hold: Callable[[], Awaitable[None]],
    http_timeout: float,
    start_interval: float = 0.005,
    headers: dict[str, str] | None = None,
) -> None:
    """Open one stream per body, ``start_interval`` apart (hundreds of connects at
    once overflow a listen backlog, and a dropped SYN is retried only after 1 s),
    run ``await hold()`` while they stream, then cancel them all (their clients
    leave). ``hold`` starts once every stream was sent."""
    async with (
        open_client(base_url, timeout=http_timeout, headers=headers) as client,
        trio.open_nursery() as nursery,
    ):
        for body, count in zip(bodies, counts, strict=True):
            nursery.start_soon(read_stream, client, body, count)
            await trio.sleep(start_interval)
        await hold()
        nursery.cancel_scope.cancel()
