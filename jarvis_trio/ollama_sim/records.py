"""What the simulator records: connections, their requests, one sequence of events, stats.

Tests read the records in process (:class:`~jarvis_trio.ollama_sim.OllamaSim`
delegates to a :class:`Recorder`) or over HTTP (``/_sim/...``); the server writes
them through the recorder's write side (:meth:`Recorder.open`,
:meth:`Recorder.begin`, :meth:`Recorder.end`, :meth:`Recorder.close`). The
reference page ``docs/reference/ollama-sim.md`` describes what a test can rely on.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import trio

SESSION_HEADER = "x-jarvis-session"
# Memory stays bounded in a long run: the oldest closed connections and the
# oldest events are forgotten first.
MAX_CLOSED_RECORDS = 10_000
MAX_EVENTS = 100_000

Outcome = Literal[
    "completed",  # the whole answer was written to the socket
    "rejected",  # 4xx from the simulator itself: bad request, unknown model, ...
    "error",  # a simulated failure: status=..., error_after=...
    "client_closed",  # the client closed (or reset) the connection first
    "fault_disconnect",  # disconnect_after closed the connection
    "shutdown",  # the simulator was stopped mid-answer
]
ClosedBy = Literal["client", "server"]
EventKind = Literal["open", "request", "end", "close"]


@dataclass
class RequestRecord:
    """One request on a connection; ``outcome`` is None while it is being answered."""

    conn: int
    index: int  # per connection, from 0; not reused after a reset
    method: str
    path: str
    received: float  # the whole request (head and body) was in
    headers: dict[str, str]  # the X-* headers, names lower-cased
    model: str | None = None  # as requested, faults included
    faults: dict[str, str | None] = field(default_factory=dict)
    stream: bool | None = None
    # The request's JSON body, as received (for tests that check what a gateway sent).
    body: dict[str, Any] | None = None
    status: int | None = None
    first_byte: float | None = None  # the first byte of the response was sent
    ended: float | None = None
    tokens_sent: int = 0
    outcome: Outcome | None = None

    @property
    def session(self) -> str | None:
        return self.headers.get(SESSION_HEADER)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ConnectionRecord:
    id: int
    peer: str  # "127.0.0.1:54321": the client's port, to match a gateway's pool
    opened: float
    closed: float | None = None
    closed_by: ClosedBy | None = None
    control_requests: int = 0
    requests: list[RequestRecord] = field(default_factory=list)

    @property
    def is_control(self) -> bool:
        """Only ``/_sim/`` requests so far: the test's own inspection connection."""
        return self.control_requests > 0 and not self.requests

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimEvent:
    seq: int
    t: float
    kind: EventKind
    conn: int
    request: int | None = None  # request, end
    method: str | None = None  # request
    path: str | None = None  # request
    model: str | None = None  # request
    outcome: Outcome | None = None  # end
    by: ClosedBy | None = None  # close

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True)
class SimStats:
    open_connections: int  # control connections not counted
    live_requests: int
    session_live: dict[str, int]  # by X-Jarvis-Session: requests being answered now
    session_peak: dict[str, int]  # by X-Jarvis-Session: most answered at once

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Recorder:
    """The records of one simulator, and the event that wakes whoever waits on them."""

    def __init__(self) -> None:
        self._records: dict[int, ConnectionRecord] = {}
        self._closed_ids: collections.deque[int] = collections.deque()
        self._events: collections.deque[SimEvent] = collections.deque(maxlen=MAX_EVENTS)
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._session_live: dict[str, int] = {}
        self._session_peak: dict[str, int] = {}
        self._live_requests = 0
        self._changed = trio.Event()

    # -- reading ------------------------------------------------------------------

    def records(self) -> list[ConnectionRecord]:
        """Every connection since the last reset, oldest first (copies)."""
        return copy.deepcopy(list(self._records.values()))

    def record(self, conn_id: int) -> ConnectionRecord:
        return copy.deepcopy(self._records[conn_id])

    def requests(self) -> list[RequestRecord]:
        """Every recorded request, in the order they arrived (copies)."""
        found = [r for c in self._records.values() for r in c.requests]
        return copy.deepcopy(sorted(found, key=lambda r: r.received))

    def events(self) -> list[SimEvent]:
        return list(self._events)

    def connections_json(self) -> list[dict[str, Any]]:
        """``GET /_sim/connections``."""
        return [r.to_json() for r in self._records.values()]

    def events_json(self) -> list[dict[str, Any]]:
        """``GET /_sim/events``."""
        return [e.to_json() for e in self._events]

    @property
    def open_connections(self) -> int:
        return sum(1 for r in self._records.values() if r.closed is None and not r.is_control)

    def stats(self) -> SimStats:
        return SimStats(
            open_connections=self.open_connections,
            live_requests=self._live_requests,
            session_live={k: v for k, v in self._session_live.items() if v},
            session_peak=dict(self._session_peak),
        )

    def reset(self) -> None:
        """Forget what is over: closed connections, ended requests, all events, peaks.

        Open connections stay listed (a client may reuse one), with only their
        live request. ``seq`` and ids keep counting.
        """
        self._records = {i: r for i, r in self._records.items() if r.closed is None}
        self._closed_ids.clear()
        for record in self._records.values():
            record.requests = [r for r in record.requests if r.outcome is None]
        self._events.clear()
        self._session_peak = {k: v for k, v in self._session_live.items() if v}
        self.touch()

    async def wait_until(self, check: Callable[[], bool]) -> None:
        """Wait until ``check()`` holds, re-checking on every change of the records.

        No timeout of its own: the caller brings the deadline.
        """
        while not check():
            await self._changed.wait()

    async def wait_request(
        self, where: Callable[[RequestRecord], bool] = lambda _: True
    ) -> RequestRecord:
        """The first recorded request matching ``where`` (waits for one), as a copy."""
        found: list[RequestRecord] = []

        def check() -> bool:
            found[:] = [r for c in self._records.values() for r in c.requests if where(r)]
            return bool(found)

        await self.wait_until(check)
        return copy.deepcopy(min(found, key=lambda r: r.received))

    async def wait_closed(self, conn_id: int) -> ConnectionRecord:
        """Wait until connection ``conn_id`` is closed; its final record."""
        record = self._records[conn_id]
        await self.wait_until(lambda: record.closed is not None)
        return copy.deepcopy(record)

    # -- writing (the server) -----------------------------------------------------

    def touch(self) -> None:
        """Wake the waiters: a record changed in place (a token sent, a first byte)."""
        self._changed.set()
        self._changed = trio.Event()

    def open(self, peer: str) -> ConnectionRecord:
        """A new connection from ``peer``: its record, and an ``open`` event."""
        record = ConnectionRecord(id=next(self._conn_ids), peer=peer, opened=time.monotonic())
        self._records[record.id] = record
        self._emit("open", record.id)
        return record

    def close(self, record: ConnectionRecord, peer_closed_at: float | None) -> None:
        """The connection is over: closed by the client at ``peer_closed_at``, or by us now."""
        if peer_closed_at is not None:
            record.closed, record.closed_by = peer_closed_at, "client"
        else:
            record.closed, record.closed_by = time.monotonic(), "server"
        self._emit("close", record.id, by=record.closed_by)
        self._closed_ids.append(record.id)
        if len(self._closed_ids) > MAX_CLOSED_RECORDS:
            self._records.pop(self._closed_ids.popleft(), None)

    def begin(self, record: ConnectionRecord, request: RequestRecord) -> None:
        """``request`` is being answered on the connection of ``record``."""
        record.requests.append(request)
        self._live_requests += 1
        session = request.session
        if session is not None:
            live = self._session_live[session] = self._session_live.get(session, 0) + 1
            self._session_peak[session] = max(self._session_peak.get(session, 0), live)
        self._emit(
            "request",
            record.id,
            request=request.index,
            method=request.method,
            path=request.path,
            model=request.model,
        )

    def end(self, request: RequestRecord, *, client_closed: bool) -> None:
        """``request`` is answered (or given up); a second call does nothing.

        With no outcome set yet, the client closed first or the server is shutting down.
        """
        if request.ended is not None:
            return
        if request.outcome is None:
            request.outcome = "client_closed" if client_closed else "shutdown"
        request.ended = time.monotonic()
        self._live_requests -= 1
        session = request.session
        if session is not None:
            self._session_live[session] -= 1
        self._emit("end", request.conn, request=request.index, outcome=request.outcome)

    def _emit(self, kind: EventKind, conn: int, **fields: Any) -> None:
        event = SimEvent(next(self._seq), time.monotonic(), kind, conn, **fields)
        self._events.append(event)
        self.touch()
