"""An HTTP exchange's exit callbacks run once it ends, and are then let go."""

from __future__ import annotations

import weakref
from functools import partial
from typing import Any, cast

from hypercorn.typing import Scope

from jarvis_trio.api.exchange import ExchangeLifetime, exit_callbacks
from tests.support.helpers import deadline


class _Stream:
    """What a callback names: in the server, a stream with its request and messages."""


@deadline(5)
async def test_the_scope_no_longer_names_what_the_exit_callbacks_named() -> None:
    """The scope outlives the exchange in Quart's and hypercorn's reference cycles,
    until the cyclic collector runs (rarely): it must not keep a stream alive."""
    stream = _Stream()
    gone = weakref.ref(stream)
    ran: list[_Stream] = []
    to_register = [partial(ran.append, stream)]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        exit_callbacks(scope).extend(to_register)
        to_register.clear()

    async def receive() -> Any:
        raise AssertionError("not read")

    async def send(message: Any) -> None:
        raise AssertionError("not sent")

    scope = cast(Scope, {"type": "http", "headers": []})  # kept, as the cycles keep it
    await ExchangeLifetime(app)(scope, receive, send)
    assert ran == [stream] and exit_callbacks(scope) == []
    del stream
    ran.clear()
    assert gone() is None
