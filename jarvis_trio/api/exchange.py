"""The ASGI middleware that ends every HTTP exchange cleanly, and its exit callbacks."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope

EXIT_CALLBACKS = "jarvis.on_exit"


def exit_callbacks(scope: Scope) -> list[Callable[[], None]]:
    """What must run when the exchange of ``scope`` is over, however it ends."""
    callbacks: list[Callable[[], None]] = cast(dict[str, Any], scope)[EXIT_CALLBACKS]
    return callbacks


class ExchangeLifetime:
    """ASGI middleware for the three things an HTTP exchange must never leave behind.

    1. Nothing started for the exchange outlives it. Quart awaits
       ``http.response.start`` before it enters a streaming body, so a client
       that leaves at that moment never runs the body's ``finally``; the
       exchange itself always ends, so its callbacks run here.
    2. A connection is never left with unread request body. When we answer
       before reading a body (an auth error, a 404, a 413), hypercorn's
       per-request queue fills and the client's next request on that kept-alive
       connection hangs (docs/explanation/measurements.md). Such a response says
       ``Connection: close``.
    3. The connection outlives the exchange as hypercorn means it to: closed after a
       ``Connection: close`` answer, its idle timer restarted when kept alive.
       hypercorn's trio worker does both from *inside* the app's final send, after
       posting ``http.disconnect`` to the app; quart-trio cancels the request's
       nursery the moment its reader sees that disconnect, so the rest of the send
       is cancelled at its next checkpoint (``send_eof`` before the close, the idle
       timer's lock) and the socket stays open for good. A disconnect that arrives
       during the final send is therefore held back until that send has returned.
       Upstream (hypercorn 0.18 protocol/h11.py ``_maybe_recycle``, quart-trio 0.12
       asgi.py ``handle_messages``); the same symptom, cause not named there:
       https://github.com/pgjones/hypercorn/issues/330. docs/howto/hypercorn.md has more.
    """

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        callbacks: list[Callable[[], None]] = []
        cast(dict[str, Any], scope)[EXIT_CALLBACKS] = callbacks
        body_done = not declares_body(scope["headers"])
        final_send_done: trio.Event | None = None

        async def receive_tracked() -> Any:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.disconnect" and final_send_done is not None:
                await final_send_done.wait()  # (3): let hypercorn finish with the socket
            return message

        async def send_tracked(message: Any) -> None:
            nonlocal final_send_done
            if message["type"] == "http.response.start" and not body_done:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            if message["type"] != "http.response.body" or message.get("more_body", False):
                await send(message)
                return
            final_send_done = trio.Event()
            try:
                await send(message)
            finally:
                final_send_done.set()

        try:
            await self.app(scope, receive_tracked, send_tracked)
        finally:
            try:
                for callback in callbacks:
                    callback()
            finally:
                # The scope outlives the exchange in reference cycles (Quart's and
                # hypercorn's objects) until the cyclic collector runs, which is rarely
                # (jarvis_trio/collector.py): it must not keep what the callbacks name
                # (a stream, its request and its messages) alive that long.
                callbacks.clear()


def declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return value.strip() not in (b"", b"0")
        if lowered == b"transfer-encoding":
            return True
    return False
