"""What went over one MCP connection: which request is which tool, which were cancelled.

:class:`Ledger` wraps the two streams between a transport and :class:`mcp.ClientSession`.
It watches the session's ``tools/call`` requests and ``notifications/cancelled``, and
drops a server's *late answer*: a result for a call this side has cancelled (a tool
that ignored its cancel). The SDK would drop it as well, silently; here it is counted,
so a server that keeps ignoring cancels can be restarted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import anyio
import mcp_types
import trio
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

RequestId = int | str

_REMEMBERED = 1024
"""Cancelled ids kept to recognise a late answer (a compliant server never sends one)."""


class Ledger:
    def __init__(self, on_late_answer: Callable[[str], None]) -> None:
        self._on_late_answer = on_late_answer
        self._tools: dict[RequestId, str] = {}
        self._cancelled: OrderedDict[RequestId, str] = OrderedDict()
        self.closed = trio.Event()  # the server's side of the connection ended

    def wrap(
        self,
        read_stream: ReadStream[SessionMessage | Exception],
        write_stream: WriteStream[SessionMessage],
    ) -> tuple[_LedgerReader, _LedgerWriter]:
        return _LedgerReader(self, read_stream), _LedgerWriter(self, write_stream)

    def sent(self, message: Any) -> None:
        if isinstance(message, mcp_types.JSONRPCRequest) and message.method == "tools/call":
            name = (message.params or {}).get("name")
            self._tools[message.id] = name if isinstance(name, str) else "?"
        elif (
            isinstance(message, mcp_types.JSONRPCNotification)
            and message.method == "notifications/cancelled"
        ):
            request_id = (message.params or {}).get("requestId")
            if isinstance(request_id, int | str) and request_id in self._tools:
                self._cancelled[request_id] = self._tools.pop(request_id)
                while len(self._cancelled) > _REMEMBERED:
                    self._cancelled.popitem(last=False)

    def received(self, message: Any) -> bool:
        """False for a message to drop (a late answer)."""
        if not isinstance(message, mcp_types.JSONRPCResponse | mcp_types.JSONRPCError):
            return True
        request_id = message.id
        if request_id is None:
            return True
        tool = self._cancelled.pop(request_id, None)
        if tool is not None:
            # An error is how some servers and transports acknowledge a cancel (the SDK's
            # 1.x servers, streamable HTTP closing the request's stream): dropped quietly.
            # A result means the tool ran to its end regardless.
            if isinstance(message, mcp_types.JSONRPCResponse):
                self._on_late_answer(tool)
            return False
        self._tools.pop(request_id, None)
        return True


class _ClosedOnExit:
    """``async with`` closes the stream, as the SDK's streams expect."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _LedgerReader(_ClosedOnExit):
    def __init__(self, ledger: Ledger, inner: ReadStream[SessionMessage | Exception]) -> None:
        self._ledger = ledger
        self._inner = inner

    async def receive(self) -> SessionMessage | Exception:
        while True:
            try:
                item = await self._inner.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
                self._ledger.closed.set()
                raise
            if isinstance(item, Exception) or self._ledger.received(item.message):
                return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class _LedgerWriter(_ClosedOnExit):
    def __init__(self, ledger: Ledger, inner: WriteStream[SessionMessage]) -> None:
        self._ledger = ledger
        self._inner = inner

    async def send(self, item: SessionMessage, /) -> None:
        # Recorded before the write: a cancel stuck behind a wedged pipe still marks
        # its call, so the answer that overtakes it is known to be late.
        self._ledger.sent(item.message)
        await self._inner.send(item)

    async def aclose(self) -> None:
        await self._inner.aclose()
