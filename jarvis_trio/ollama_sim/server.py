"""The simulator's server: a task per connection, each request routed and answered.

One task per connection owns its socket and a
:class:`~jarvis_trio.ollama_sim.connection.Conn`. It reads a whole request (head
and body, both size-capped), answers it, and loops while both sides keep the
connection alive. While an answer is being produced, and only then, a *watcher*
task is the socket's single reader: it feeds whatever arrives to h11 (pipelined
requests wait there for the next cycle) and, on EOF or a reset, records that the
client closed and cancels the answer. That is what makes a silent stall (before
the headers, or mid-stream) notice a client that gives up, promptly: nothing is
being written, so no write error would ever tell us.

The records run ahead of the wire, never behind it: a request's end is recorded
before the last bytes of its response are written, and a connection's close
before our FIN. So a client that has read a whole response, or seen the server
close, always finds that recorded already.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import h11
import trio

from jarvis_trio.config import is_loopback
from jarvis_trio.ollama_sim import models
from jarvis_trio.ollama_sim.connection import Conn, Disconnect, Incoming, PeerGone
from jarvis_trio.ollama_sim.faults import MAX_ANSWER_TOKENS
from jarvis_trio.ollama_sim.records import (
    ConnectionRecord,
    Recorder,
    RequestRecord,
    SimEvent,
    SimStats,
)
from jarvis_trio.ollama_sim.requests import Generation, parse_generation
from jarvis_trio.ollama_sim.streaming import generate
from jarvis_trio.ollama_sim.wire import JSON_TYPE, TEXT_TYPE, HttpError, dumps

MAX_REQUESTS_PER_CONNECTION = 100_000
CONTROL_PREFIX = "/_sim/"

_STATIC: dict[str, Callable[[], tuple[bytes, str]]] = {
    "/": lambda: (b"Ollama is running", TEXT_TYPE),
    "/api/version": lambda: (models.version_body(), JSON_TYPE),
    "/api/tags": lambda: (models.tags_body(), JSON_TYPE),
}
_ROUTES: dict[str, frozenset[str]] = {
    "/": frozenset({"GET", "HEAD"}),
    "/api/version": frozenset({"GET", "HEAD"}),
    "/api/tags": frozenset({"GET", "HEAD"}),
    "/api/chat": frozenset({"POST"}),
    "/api/generate": frozenset({"POST"}),
    "/api/show": frozenset({"POST"}),
}


class OllamaSim:
    """The simulator: its records (a :class:`Recorder`), and the server that fills them."""

    def __init__(self, *, tokens_per_second: float = 50.0, answer_tokens: int = 40) -> None:
        if not tokens_per_second > 0:
            raise ValueError("tokens_per_second must be > 0")
        if not 0 <= answer_tokens <= MAX_ANSWER_TOKENS:
            raise ValueError(f"answer_tokens must be 0..{MAX_ANSWER_TOKENS}")
        self.tokens_per_second = tokens_per_second
        self.answer_tokens = answer_tokens
        self.url = ""  # set once bound
        self._recorder = Recorder()

    # -- the in-process API (the recorder's reading side) ---------------------------

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def records(self) -> list[ConnectionRecord]:
        """Every connection since the last reset, oldest first (copies)."""
        return self._recorder.records()

    def record(self, conn_id: int) -> ConnectionRecord:
        return self._recorder.record(conn_id)

    def requests(self) -> list[RequestRecord]:
        """Every recorded request, in the order they arrived (copies)."""
        return self._recorder.requests()

    def events(self) -> list[SimEvent]:
        return self._recorder.events()

    @property
    def open_connections(self) -> int:
        return self._recorder.open_connections

    def stats(self) -> SimStats:
        return self._recorder.stats()

    def reset(self) -> None:
        """Forget what is over (:meth:`Recorder.reset`)."""
        self._recorder.reset()

    async def wait_until(self, check: Callable[[], bool]) -> None:
        """Wait until ``check()`` holds, re-checking on every change of the records.

        No timeout of its own: the caller brings the deadline.
        """
        await self._recorder.wait_until(check)

    async def wait_request(
        self, where: Callable[[RequestRecord], bool] = lambda _: True
    ) -> RequestRecord:
        """The first recorded request matching ``where`` (waits for one), as a copy."""
        return await self._recorder.wait_request(where)

    async def wait_closed(self, conn_id: int) -> ConnectionRecord:
        """Wait until connection ``conn_id`` is closed; its final record."""
        return await self._recorder.wait_closed(conn_id)

    # -- serving ------------------------------------------------------------------

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[OllamaSim] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Bind (port 0: any), report ``self`` as started, serve until cancelled.

        Cancelling closes every connection, each recorded as closed by ``"server"``.
        """
        if not is_loopback(host):
            raise ValueError(f"the Ollama simulator only listens on loopback, not {host!r}")
        host = "127.0.0.1" if host == "localhost" else host
        listeners = await trio.open_tcp_listeners(port, host=host)
        address, bound_port = listeners[0].socket.getsockname()[:2]
        self.url = f"http://{f'[{address}]' if ':' in address else address}:{bound_port}"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(trio.serve_listeners, self._serve_connection, listeners))
            task_status.started(self)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        peer = stream.socket.getpeername()
        record = self._recorder.open(f"{peer[0]}:{peer[1]}")
        conn = Conn(stream, record, self._recorder)
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                incoming = await conn.receive_request()
                if incoming is None:
                    return
                await self._exchange(conn, incoming)
                if not conn.reusable:
                    return
                conn.protocol.start_next_cycle()
        except PeerGone:
            conn.peer_closed()
        finally:
            self._recorder.close(record, conn.peer_closed_at)
            try:
                if conn.peer_closed_at is None:
                    await conn.linger()
            finally:
                await trio.aclose_forcefully(stream)

    async def _exchange(self, conn: Conn, incoming: Incoming) -> None:
        """Answer one request, recorded unless it is a control request."""
        path = _path(incoming.request)
        method = incoming.request.method
        conn.head_only = method == b"HEAD"
        if path.startswith(CONTROL_PREFIX) and incoming.reject is None:
            conn.record.control_requests += 1
            await self._control(conn, method, path)
            return
        generation: Generation | None = None
        parse_error: HttpError | None = None
        if path in ("/api/chat", "/api/generate") and method == b"POST" and not incoming.reject:
            try:
                generation = parse_generation(
                    "chat" if path == "/api/chat" else "generate", incoming.body
                )
            except HttpError as exc:
                parse_error = exc
        request = conn.current = _request_record(conn, incoming, generation, parse_error)
        conn.requests_seen += 1
        self._recorder.begin(conn.record, request)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.watch_peer, nursery.cancel_scope)
                try:
                    await self._route(conn, request, incoming, generation, parse_error)
                except Disconnect:
                    conn.disconnected = True
                    request.outcome = "fault_disconnect"
                except PeerGone:
                    conn.peer_closed()
                nursery.cancel_scope.cancel()
        finally:
            conn.current = None
            conn.end_request(request)

    async def _route(
        self,
        conn: Conn,
        request: RequestRecord,
        incoming: Incoming,
        generation: Generation | None,
        parse_error: HttpError | None,
    ) -> None:
        path, method = request.path, request.method
        allowed = _ROUTES.get(path)
        if incoming.reject is not None:
            await _reject(conn, request, incoming.reject.status, incoming.reject.message)
        elif allowed is None:
            await _reject(conn, request, 404, "404 page not found", json_body=False)
        elif method not in allowed and not (method == "HEAD" and "GET" in allowed):
            headers = [("allow", ", ".join(sorted(allowed)))]
            await _reject(conn, request, 405, "405 method not allowed", False, headers)
        elif parse_error is not None:
            await _reject(conn, request, parse_error.status, parse_error.message)
        elif generation is not None:
            await generate(
                conn,
                request,
                generation,
                tokens_per_second=self.tokens_per_second,
                answer_tokens=self.answer_tokens,
            )
        elif path == "/api/show":
            try:
                body = models.show_body(incoming.body)
            except HttpError as exc:
                await _reject(conn, request, exc.status, exc.message)
                return
            request.outcome = "completed"
            await conn.send_simple(200, body, JSON_TYPE)
        else:
            request.outcome = "completed"
            await conn.send_simple(200, *_STATIC[path]())

    async def _control(self, conn: Conn, method: bytes, path: str) -> None:
        handlers: dict[tuple[bytes, str], Callable[[], Any]] = {
            (b"GET", "/_sim/connections"): self._recorder.connections_json,
            (b"GET", "/_sim/events"): self._recorder.events_json,
            (b"GET", "/_sim/stats"): lambda: self.stats().to_json(),
            (b"POST", "/_sim/reset"): self._reset_json,
        }
        handler = handlers.get((method, path))
        if handler is not None:
            await conn.send_simple(200, dumps(handler()), JSON_TYPE)
        elif any(p == path for _, p in handlers):
            await conn.send_simple(405, b"405 method not allowed", TEXT_TYPE)
        else:
            await conn.send_simple(404, b"404 page not found", TEXT_TYPE)

    def _reset_json(self) -> dict[str, str]:
        self.reset()
        return {"status": "reset"}


async def serve_ollama_sim(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    tokens_per_second: float = 50.0,
    answer_tokens: int = 40,
    task_status: trio.TaskStatus[OllamaSim] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a new :class:`OllamaSim` until cancelled; ``started`` gets it (``.url`` set)."""
    sim = OllamaSim(tokens_per_second=tokens_per_second, answer_tokens=answer_tokens)
    await sim.serve(host, port, task_status=task_status)


async def _reject(
    conn: Conn,
    request: RequestRecord,
    status: int,
    message: str,
    json_body: bool = True,
    headers: Sequence[tuple[str, str]] = (),
) -> None:
    request.outcome = "rejected"
    if json_body:
        await conn.send_simple(status, dumps({"error": message}), JSON_TYPE, headers)
    else:
        await conn.send_simple(status, message.encode(), TEXT_TYPE, headers)


def _path(request: h11.Request) -> str:
    return request.target.decode("ascii", "replace").split("?", 1)[0]


def _request_record(
    conn: Conn, incoming: Incoming, generation: Generation | None, error: HttpError | None
) -> RequestRecord:
    """The record of a request as received: its X-* headers, and what parsing found."""
    event = incoming.request
    request = RequestRecord(
        conn=conn.record.id,
        index=conn.requests_seen,
        method=event.method.decode("ascii", "replace"),
        path=_path(event),
        received=incoming.received,
        headers={
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in event.headers
            if name.startswith(b"x-")
        },
    )
    if error is not None:
        request.model = error.model
    if generation is not None:
        request.model = generation.model
        request.faults = dict(generation.raw_faults)
        request.stream = generation.stream
        request.body = generation.body
    return request
