"""One TCP connection: its socket, its ``h11.Connection``, reading requests, writing responses.

While a request is being answered, :meth:`Conn.watch_peer` is the socket's single
reader, so a client that gives up during a silent stall is noticed at once.
Writes keep the records ahead of the wire: a request's end is recorded before
the last bytes of its response go out (:meth:`Conn.send`).
"""

from __future__ import annotations

import email.utils
import http
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import h11
import trio

from jarvis_trio.ollama_sim.records import ConnectionRecord, Recorder, RequestRecord
from jarvis_trio.ollama_sim.wire import JSON_TYPE, HttpError, dumps

MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
# An oversized body is read and dropped up to this size, so the 413 reaches a
# client that is still sending (closing on unread data would be a reset).
MAX_DISCARD_BYTES = 8 * MAX_BODY_BYTES
# What a client may pipeline while an answer is being produced; beyond it the
# watcher stops reading (and so stops noticing a close).
MAX_PIPELINED_BYTES = MAX_BODY_BYTES + MAX_HEADER_BYTES
IDLE_TIMEOUT = 300.0
LINGER_SECONDS = 0.5
RECEIVE_SIZE = 65536

_KNOWN_STATUSES = {s.value for s in http.HTTPStatus}
_TOO_LARGE_HEAD = HttpError(431, "request header fields too large")
_TOO_LARGE_BODY = HttpError(413, "request body too large")


class PeerGone(Exception):
    """The client closed or reset the connection (seen on a write)."""


class Disconnect(Exception):
    """``disconnect_after`` fired: the connection is to be closed at once."""


@dataclass(frozen=True)
class Incoming:
    """A whole request as received."""

    request: h11.Request
    body: bytes
    received: float
    reject: HttpError | None = None  # refused before parsing: too large


def _new_h11() -> h11.Connection:
    return h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)


@dataclass(eq=False)
class Conn:
    """A connection's state, and the reads and writes that keep its record up to date."""

    stream: trio.SocketStream
    record: ConnectionRecord
    recorder: Recorder
    protocol: h11.Connection = field(default_factory=_new_h11)  # its HTTP state
    peer_closed_at: float | None = None
    disconnected: bool = False
    requests_seen: int = 0  # request indexes go on across a reset
    current: RequestRecord | None = None
    head_only: bool = False  # answering a HEAD request

    def peer_closed(self) -> None:
        if self.peer_closed_at is None:
            self.peer_closed_at = time.monotonic()

    @property
    def reusable(self) -> bool:
        return (
            self.peer_closed_at is None
            and not self.disconnected
            and self.protocol.our_state is h11.DONE
            and self.protocol.their_state is h11.DONE
        )

    # -- output -------------------------------------------------------------------

    async def send(self, *events: h11.Event) -> None:
        """Send h11 events in one write.

        A response's last events go together with its EndOfMessage, and the
        request's end is recorded before that write: a client that has the
        whole response finds its end recorded. Raises :class:`PeerGone`.
        """
        data = b"".join(self.protocol.send(event) or b"" for event in events)
        current = self.current
        if current is not None and any(isinstance(e, h11.EndOfMessage) for e in events):
            self.end_request(current)
        if not data:
            return
        if current is not None and current.first_byte is None:
            current.first_byte = time.monotonic()
            self.recorder.touch()
        try:
            await self.stream.send_all(data)
        except trio.BrokenResourceError:
            self.peer_closed()
            raise PeerGone from None

    def head(self, status: int, headers: Sequence[tuple[str, str]]) -> h11.Response:
        """A response head (``date`` added); the status goes in the request's record."""
        if self.current is not None:
            self.current.status = status
        all_headers = [("date", email.utils.formatdate(usegmt=True)), *headers]
        reason = http.HTTPStatus(status).phrase.encode() if status in _KNOWN_STATUSES else b""
        return h11.Response(status_code=status, headers=all_headers, reason=reason)

    async def send_simple(
        self,
        status: int,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        """A whole response with a ``content-length`` (no body for a HEAD request)."""
        fixed = [("content-type", content_type), ("content-length", str(len(body)))]
        head = self.head(status, [*fixed, *headers])
        if self.head_only:
            await self.send(head, h11.EndOfMessage())
        else:
            await self.send(head, h11.Data(data=body), h11.EndOfMessage())

    def count_token(self) -> None:
        """One more token of the current answer is sent (or, buffered, about to be)."""
        assert self.current is not None
        self.current.tokens_sent += 1
        self.recorder.touch()

    def end_request(self, request: RequestRecord) -> None:
        """Record the end of ``request`` (once): client_closed or shutdown unless known."""
        self.recorder.end(request, client_closed=self.peer_closed_at is not None)

    # -- input --------------------------------------------------------------------

    async def receive_request(self) -> Incoming | None:
        """The next whole request; None when the connection is over (peer gone, idle, garbage)."""
        request: h11.Request | None = None
        body = bytearray()
        seen = 0
        with trio.move_on_after(IDLE_TIMEOUT):
            try:
                # Bounded: every pass consumes input, which h11 caps for the head
                # and we cap for the body.
                while True:
                    event = self.protocol.next_event()
                    if event is h11.NEED_DATA:
                        await self._receive_into()
                    elif isinstance(event, h11.Request):
                        request = event
                        # h11 caps only an *incomplete* head: one that completes
                        # within the read that crosses the cap gets through.
                        if _head_size(event) > MAX_HEADER_BYTES:
                            return Incoming(event, b"", time.monotonic(), _TOO_LARGE_HEAD)
                        declared = _content_length(event)
                        if declared is not None and declared > MAX_DISCARD_BYTES:
                            return Incoming(event, b"", time.monotonic(), _TOO_LARGE_BODY)
                    elif isinstance(event, h11.Data):
                        seen += len(event.data)
                        if seen <= MAX_BODY_BYTES:
                            body += event.data
                        elif seen > MAX_DISCARD_BYTES:
                            assert request is not None
                            return Incoming(request, b"", time.monotonic(), _TOO_LARGE_BODY)
                    elif isinstance(event, h11.EndOfMessage):
                        assert request is not None
                        if seen > MAX_BODY_BYTES:
                            return Incoming(request, b"", time.monotonic(), _TOO_LARGE_BODY)
                        return Incoming(request, bytes(body), time.monotonic())
                    else:  # ConnectionClosed: an EOF between requests
                        return None
            except h11.RemoteProtocolError as exc:
                if self.peer_closed_at is None and self.protocol.our_state in (
                    h11.IDLE,
                    h11.SEND_RESPONSE,
                ):
                    status = exc.error_status_hint
                    await self.send_simple(status, dumps({"error": str(exc)}), JSON_TYPE)
                return None
        return None  # idle: close, as a keep-alive timeout would

    async def watch_peer(self, answer: trio.CancelScope) -> None:
        """Be the socket's reader while an answer is produced; cancel it on EOF or a reset."""
        fed = 0
        while fed <= MAX_PIPELINED_BYTES:
            data = await self._receive_into()
            if not data:
                answer.cancel()
                return
            fed += len(data)
        await trio.sleep_forever()

    async def linger(self) -> None:
        """Send our FIN, then drop what the client still sends, for a moment.

        Closing a socket with unread input sends a reset, and a reset can
        destroy the response we just sent (a 431 or 413 while the client is
        still writing) before the client reads it.
        """
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await self.stream.send_eof()
                drained = 0
                while drained <= MAX_DISCARD_BYTES:
                    data = await self.stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    drained += len(data)
            except trio.BrokenResourceError:
                return

    async def _receive_into(self) -> bytes:
        try:
            data = await self.stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:
            data = b""  # a reset: as final as an EOF
        if not data:
            self.peer_closed()
        self.protocol.receive_data(data)
        return data


def _head_size(request: h11.Request) -> int:
    """At least the head's size on the wire (``name: value\r\n`` per header)."""
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None
