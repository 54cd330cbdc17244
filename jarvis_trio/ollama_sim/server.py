"""A fault-injecting Ollama server for tests: real HTTP on loopback, on trio sockets and h11.

It speaks the part of Ollama's API a gateway uses (``POST /api/chat``,
``POST /api/generate``, ``GET /api/tags``, ``POST /api/show``, ``GET /api/version``,
``GET /``),
answers deterministically, and misbehaves on request, so tests can watch what
the gateway does to its upstream and *when* it closes it.

Answers
-------
Word tokens drawn by a PRNG seeded with the prompt (and ``options.seed``): the
first without a leading space, then ``" word"``. An answer is ``answer_tokens``
long (40 by default) and paced at ``tokens_per_second`` (50), both server
parameters. ``options.num_predict`` caps it (``done_reason`` ``"length"``);
``options.stop`` cuts it before the first stop string (``"stop"``). As in
Ollama, a chat without messages or a generate without a prompt is a model
*load*: a single ``{"done": true, "done_reason": "load"}`` object. The
``model`` field of every answer echoes the requested name, faults included.

Faults
------
Chosen per request through the model name::

    <base model>+<fault>[+<fault>...]        e.g. llama3.2:1b+slow=0.2+disconnect_after=3

each fault ``name`` or ``name=value``. The base model must be one of
:data:`MODELS` (a name without a tag means ``:latest``), or the answer is
Ollama's 404. An unknown fault or a bad value is a 400.

``stall_headers[=S]``
    read the request, then send nothing at all, not even the status line,
    for S seconds (default: forever); then answer normally.
``stall_after=N``
    send the headers and N tokens, then go silent forever (a stalled model).
``slow=S``
    S seconds between tokens instead of ``1 / tokens_per_second``.
``disconnect_after=N``
    send N tokens, then close the TCP connection (a FIN, no terminating chunk).
``malformed_after=N``
    after N tokens send a line that is not JSON (a truncated chunk), then go on.
``error_after=N``
    after N tokens send ``{"error": "simulated failure"}`` and end the
    response properly (Ollama's mid-stream error).
``status[=CODE]`` or ``httpCODE`` (e.g. ``http500``)
    answer CODE (default 500, 400..599) with ``{"error": "simulated internal error"}``.
``tokens=N``
    the answer is N tokens long.

An ``*_after=N`` fault with N beyond the end of the answer fires just before
the final ``done`` line, so it always fires. With ``stream: false`` the faults
act on the single response: ``stall_after`` and ``disconnect_after`` happen
after N token times with nothing sent, ``malformed_after`` makes the body
truncated JSON, ``error_after`` makes it a 500 (what Ollama does).

Records
-------
Per TCP connection a :class:`ConnectionRecord` (opened, closed, who closed,
and a :class:`RequestRecord` per request on it), and one global sequence of
:class:`SimEvent` (``open``, ``request``, ``end``, ``close``) numbered by a
``seq`` that only grows, even across resets, so tests assert *order* rather
than wall-clock thresholds. Timestamps are ``time.monotonic()``, which is one
clock for every process on a Linux machine. Control requests (``/_sim/...``)
are served but not recorded as requests and emit no request events; their
connections are marked by ``control_requests``. :class:`SimStats` counts open
connections and, per ``X-Jarvis-Session`` value, the requests being answered
now and the most ever answered at once (two live streams of one session show
as a peak of 2). In-process tests use the methods of :class:`OllamaSim`
(``records()``, ``events()``, ``stats()``, ``reset()``, ``wait_request()``,
``wait_closed()``, ``wait_until()``); other processes use
``GET /_sim/connections``, ``GET /_sim/events``, ``GET /_sim/stats`` and
``POST /_sim/reset``. The oldest closed connections and events are dropped
past :data:`MAX_CLOSED_RECORDS` and :data:`MAX_EVENTS`.

Theory of operation
-------------------
One task per connection owns its socket and an ``h11.Connection``. It reads a
whole request (head and body, both size-capped), answers it, and loops while
both sides keep the connection alive. While an answer is being produced, and
only then, a *watcher* task is the socket's single reader: it feeds whatever
arrives to h11 (pipelined requests wait there for the next cycle) and, on EOF
or a reset, records that the client closed and cancels the answer. That is
what makes a silent stall (before the headers, or mid-stream) notice a client
that gives up, promptly: nothing is being written, so no write error would
ever tell us.

The records run ahead of the wire, never behind it: a request's end is
recorded before the last bytes of its response are written, and a
connection's close before our FIN. So a client that has read a whole
response, or seen the server close, always finds that recorded already.
"""

from __future__ import annotations

import abc
import argparse
import base64
import collections
import copy
import dataclasses
import email.utils
import hashlib
import http
import itertools
import json
import math
import random
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Literal

import h11
import trio

from jarvis_trio import sim_answers
from jarvis_trio.config import is_loopback

OLLAMA_VERSION = "0.5.7"
DEFAULT_PORT = 11435
MAX_BODY_BYTES = 1024 * 1024
MAX_HEADER_BYTES = 64 * 1024
# An oversized body is read and dropped up to this size, so the 413 reaches a
# client that is still sending (closing on unread data would be a reset).
MAX_DISCARD_BYTES = 8 * MAX_BODY_BYTES
# What a client may pipeline while an answer is being produced; beyond it the
# watcher stops reading (and so stops noticing a close).
MAX_PIPELINED_BYTES = MAX_BODY_BYTES + MAX_HEADER_BYTES
MAX_REQUESTS_PER_CONNECTION = 100_000
MAX_ANSWER_TOKENS = 100_000
# Memory stays bounded in a long run: the oldest closed connections and the
# oldest events are forgotten first.
MAX_CLOSED_RECORDS = 10_000
MAX_EVENTS = 100_000
IDLE_TIMEOUT = 300.0
LINGER_SECONDS = 0.5
RECEIVE_SIZE = 65536
SESSION_HEADER = "x-jarvis-session"
CONTROL_PREFIX = "/_sim/"

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
TEXT_TYPE = "text/plain; charset=utf-8"


@dataclass(frozen=True)
class FakeModel:
    name: str
    family: str
    parameter_size: str
    quantization_level: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": "2025-01-15T10:00:00.000000+00:00",
            "size": self.size,
            "digest": hashlib.sha256(self.name.encode()).hexdigest(),
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": self.family,
                "families": [self.family],
                "parameter_size": self.parameter_size,
                "quantization_level": self.quantization_level,
            },
        }


MODELS = (
    FakeModel("llama3.2:1b", "llama", "1.2B", "Q8_0", 1_321_098_329),
    FakeModel("qwen2.5:0.5b", "qwen2", "494.03M", "Q4_K_M", 397_821_319),
    FakeModel("tinyllama:latest", "llama", "1B", "Q4_0", 637_700_138),
)
_MODELS_BY_NAME = {model.name: model for model in MODELS}

_VOCABULARY = (
    "the a an model token stream answer socket thread nursery scope cancel deadline "
    "upstream gateway client server session prompt reply queue buffer channel signal "
    "worker request response header chunk line byte clock timer budget limit "
    "quick slow idle live old new first last next every each some "
    "reads writes sends waits stops starts ends closes opens holds keeps drops "
    "because while when after before until so and but or then"
).split()


# -- records -----------------------------------------------------------------------

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


# -- request parsing ----------------------------------------------------------------


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.model: str | None = None  # for the record, once known


@dataclass(frozen=True)
class Faults:
    stall_headers: float | None = None
    stall_after: int | None = None
    slow: float | None = None
    disconnect_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    status: int | None = None
    tokens: int | None = None


def parse_model(spec: str) -> tuple[FakeModel, Faults, dict[str, str | None]]:
    """``base+fault+name=value`` → the base model, the faults, and the faults as written.

    Raises :class:`_HttpError`: 400 for a bad fault, 404 for an unknown base model.
    """
    base, *parts = spec.split("+")
    model = _MODELS_BY_NAME.get(base if ":" in base else base + ":latest")
    if model is None:
        raise _HttpError(404, f'model "{spec}" not found, try pulling it first')
    raw: dict[str, str | None] = {}
    values: dict[str, Any] = {}
    for part in parts:
        name, sep, text = part.partition("=")
        value: str | None = text if sep else None
        raw[name] = value
        if name.startswith("http") and name[4:].isdigit() and value is None:
            name, value = "status", name[4:]
        try:
            values[name] = _fault_value(name, value)
        except ValueError as exc:
            raise _HttpError(400, f"bad fault {part!r} in model {spec!r}: {exc}") from None
    return model, Faults(**values), raw


def _fault_value(name: str, value: str | None) -> float | int:
    if name == "stall_headers":
        return math.inf if value is None else _seconds(value)
    if name == "slow":
        return _seconds(_required(value))
    if name in ("stall_after", "disconnect_after", "malformed_after", "error_after", "tokens"):
        count = int(_required(value))
        if count < 0 or (name == "tokens" and count > MAX_ANSWER_TOKENS):
            raise ValueError(
                f"must be 0..{MAX_ANSWER_TOKENS}" if name == "tokens" else "must be >= 0"
            )
        return count
    if name == "status":
        code = 500 if value is None else int(value)
        if not 400 <= code <= 599:
            raise ValueError("must be 400..599")
        return code
    raise ValueError("unknown fault")


def _required(value: str | None) -> str:
    if value is None:
        raise ValueError("needs a value")
    return value


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds <= math.inf:  # also rejects nan
        raise ValueError("must be >= 0 seconds")
    return seconds


@dataclass(frozen=True)
class Generation:
    """A parsed ``/api/chat`` or ``/api/generate`` request."""

    kind: Literal["chat", "generate"]
    model: str  # as requested, echoed back
    base: FakeModel
    faults: Faults
    raw_faults: dict[str, str | None]
    prompt: str  # what the answer derives from; "" is a model load
    stream: bool
    num_predict: int | None
    stop: tuple[str, ...]
    seed: int | None
    body: dict[str, Any] = field(default_factory=dict)
    turns: tuple[sim_answers.Turn, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    format: str | dict[str, Any] | None = None
    think: bool | str = False
    logprobs: bool = False
    top_logprobs: int = 0

    def plan(self) -> sim_answers.Plan:
        """What to answer when tools or JSON are asked for (:mod:`jarvis_trio.sim_answers`)."""
        return sim_answers.plan(
            self.turns,
            tools=self.tools,
            json_schema=self.format if isinstance(self.format, dict) else None,
            json_mode=self.format == "json",
        )


def parse_generation(kind: Literal["chat", "generate"], body: bytes) -> Generation:
    """Validate like Ollama does; raises :class:`_HttpError`."""
    if not body.strip():
        raise _HttpError(400, "missing request body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _HttpError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _HttpError(400, "request body must be a JSON object")
    model = data.get("model")
    if model is None or model == "":
        raise _HttpError(400, "model is required")
    if not isinstance(model, str):
        raise _HttpError(400, "model must be a string")
    try:
        return _parse_fields(kind, model, data)
    except _HttpError as exc:
        exc.model = model
        raise


def _parse_fields(
    kind: Literal["chat", "generate"], model: str, data: dict[str, Any]
) -> Generation:
    stream = data.get("stream", True)
    if stream is None:
        stream = True
    if not isinstance(stream, bool):
        raise _HttpError(400, "stream must be a boolean")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise _HttpError(400, "options must be an object")
    turns: tuple[sim_answers.Turn, ...] = ()
    if kind == "chat":
        prompt = _chat_prompt(data.get("messages"))
        turns = _turns(data.get("messages"))
    else:
        prompt = data.get("prompt") or ""
        if not isinstance(prompt, str):
            raise _HttpError(400, "prompt must be a string")
    num_predict = _optional_int(options, "num_predict")
    seed = _optional_int(options, "seed")
    stop = options.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise _HttpError(400, "options.stop must be a string or a list of strings")
    base, faults, raw = parse_model(model)
    tools = data.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise _HttpError(400, "tools must be a list of objects")
    fmt = data.get("format") or None
    if fmt is not None and not (fmt == "json" or isinstance(fmt, dict)):
        raise _HttpError(400, 'format must be "json" or a JSON schema')
    think = data.get("think") or False
    if not isinstance(think, bool | str):
        raise _HttpError(400, "think must be a boolean or a level")
    top_logprobs = data.get("top_logprobs") or 0
    if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
        raise _HttpError(400, "top_logprobs must be an integer from 0 to 20")
    return Generation(
        kind=kind,
        model=model,
        base=base,
        faults=faults,
        raw_faults=raw,
        prompt=prompt,
        stream=stream,
        num_predict=num_predict if num_predict is not None and num_predict >= 0 else None,
        stop=tuple(s for s in stop if s),
        seed=seed,
        body=data,
        turns=turns,
        tools=tuple(tools),
        format=fmt,
        think=think,
        logprobs=bool(data.get("logprobs")),
        top_logprobs=top_logprobs,
    )


def _chat_prompt(messages: Any) -> str:
    if messages is None:
        return ""
    if not isinstance(messages, list):
        raise _HttpError(400, "messages must be a list")
    lines = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _HttpError(400, "each message needs a string role")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise _HttpError(400, "message content must be a string")
        images = message.get("images") or []
        if not isinstance(images, list) or not all(_is_base64(i) for i in images):
            raise _HttpError(400, "images must be a list of base64 strings")
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list) or not all(_is_tool_call(c) for c in calls):
            raise _HttpError(400, "tool_calls must be a list of {function: {name, arguments}}")
        lines.append(f"{message['role']}: {content}")
    return "\n".join(lines)


def _turns(messages: list[dict[str, Any]] | None) -> tuple[sim_answers.Turn, ...]:
    return tuple(
        sim_answers.Turn(m["role"], m.get("content") or "", m.get("tool_name"))
        for m in messages or ()
    )


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        return False
    return True


def _is_tool_call(value: object) -> bool:
    function = value.get("function") if isinstance(value, dict) else None
    return (
        isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments", {}), dict)
    )


def _optional_int(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _HttpError(400, f"options.{name} must be an integer")
    return value


def answer_pieces(prompt: str, seed: int | None, count: int) -> list[str]:
    """The full answer for a prompt, as tokens: ``["word", " word", ...]``."""
    rng = random.Random(hashlib.sha256(f"{seed}|{prompt}".encode()).digest())
    words = [rng.choice(_VOCABULARY) for _ in range(count)]
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def plan_answer(
    pieces: list[str], num_predict: int | None, stop: tuple[str, ...]
) -> tuple[list[str], Literal["stop", "length"]]:
    """The tokens actually sent and the ``done_reason``.

    Computed up front, so a stop string that straddles two tokens is cut
    exactly: Ollama holds such a partial match back, and so the client never
    sees any of the stop string.
    """
    reason: Literal["stop", "length"] = "stop"
    if num_predict is not None and num_predict < len(pieces):
        pieces, reason = pieces[:num_predict], "length"
    text = "".join(pieces)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not cuts:
        return pieces, reason
    cut, kept, pos = min(cuts), [], 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return kept, "stop"


def _prompt_tokens(prompt: str) -> int:
    return max(1, len(prompt.split()))


def _created_at() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


# -- connections ------------------------------------------------------------------


class _PeerGone(Exception):
    """The client closed or reset the connection (seen on a write)."""


class _Disconnect(Exception):
    """``disconnect_after`` fired: the connection is to be closed at once."""


@dataclass(frozen=True)
class _Incoming:
    request: h11.Request
    body: bytes
    received: float
    reject: _HttpError | None = None  # refused before parsing: too large


@dataclass(eq=False)
class _Conn:
    stream: trio.SocketStream
    record: ConnectionRecord
    h11: h11.Connection
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
            and self.h11.our_state is h11.DONE
            and self.h11.their_state is h11.DONE
        )


class OllamaSim:
    """The simulator: its records, and the server that fills them (:meth:`serve`)."""

    def __init__(self, *, tokens_per_second: float = 50.0, answer_tokens: int = 40) -> None:
        if not tokens_per_second > 0:
            raise ValueError("tokens_per_second must be > 0")
        if not 0 <= answer_tokens <= MAX_ANSWER_TOKENS:
            raise ValueError(f"answer_tokens must be 0..{MAX_ANSWER_TOKENS}")
        self.tokens_per_second = tokens_per_second
        self.answer_tokens = answer_tokens
        self.url = ""  # set once bound
        self._records: dict[int, ConnectionRecord] = {}
        self._closed_ids: collections.deque[int] = collections.deque()
        self._events: collections.deque[SimEvent] = collections.deque(maxlen=MAX_EVENTS)
        self._seq = itertools.count(1)
        self._conn_ids = itertools.count(1)
        self._session_live: dict[str, int] = {}
        self._session_peak: dict[str, int] = {}
        self._live_requests = 0
        self._changed = trio.Event()

    # -- the in-process API -------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

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
        self._touch()

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

    # -- bookkeeping --------------------------------------------------------------

    def _touch(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _emit(self, kind: EventKind, conn: int, **fields: Any) -> None:
        event = SimEvent(next(self._seq), time.monotonic(), kind, conn, **fields)
        self._events.append(event)
        self._touch()

    def _open(self, peer: str) -> ConnectionRecord:
        record = ConnectionRecord(id=next(self._conn_ids), peer=peer, opened=time.monotonic())
        self._records[record.id] = record
        self._emit("open", record.id)
        return record

    def _close(self, conn: _Conn) -> None:
        record = conn.record
        if conn.peer_closed_at is not None:
            record.closed, record.closed_by = conn.peer_closed_at, "client"
        else:
            record.closed, record.closed_by = time.monotonic(), "server"
        self._emit("close", record.id, by=record.closed_by)
        self._closed_ids.append(record.id)
        if len(self._closed_ids) > MAX_CLOSED_RECORDS:
            self._records.pop(self._closed_ids.popleft(), None)

    def _begin(
        self,
        conn: _Conn,
        incoming: _Incoming,
        generation: Generation | None,
        error: _HttpError | None,
    ) -> RequestRecord:
        event = incoming.request
        record = conn.record
        request = RequestRecord(
            conn=record.id,
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
        conn.requests_seen += 1
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
        return request

    def _end(self, conn: _Conn, request: RequestRecord) -> None:
        if request.ended is not None:
            return
        if request.outcome is None:
            request.outcome = "client_closed" if conn.peer_closed_at is not None else "shutdown"
        request.ended = time.monotonic()
        self._live_requests -= 1
        session = request.session
        if session is not None:
            self._session_live[session] -= 1
        self._emit("end", conn.record.id, request=request.index, outcome=request.outcome)

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
        record = self._open(f"{peer[0]}:{peer[1]}")
        conn = _Conn(
            stream, record, h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        )
        try:
            for _ in range(MAX_REQUESTS_PER_CONNECTION):
                incoming = await self._receive_request(conn)
                if incoming is None:
                    return
                await self._exchange(conn, incoming)
                if not conn.reusable:
                    return
                conn.h11.start_next_cycle()
        except _PeerGone:
            conn.peer_closed()
        finally:
            self._close(conn)
            try:
                if conn.peer_closed_at is None:
                    await self._linger(conn)
            finally:
                await trio.aclose_forcefully(stream)

    async def _linger(self, conn: _Conn) -> None:
        """Send our FIN, then drop what the client still sends, for a moment.

        Closing a socket with unread input sends a reset, and a reset can
        destroy the response we just sent (a 431 or 413 while the client is
        still writing) before the client reads it.
        """
        with trio.move_on_after(LINGER_SECONDS):
            try:
                await conn.stream.send_eof()
                drained = 0
                while drained <= MAX_DISCARD_BYTES:
                    data = await conn.stream.receive_some(RECEIVE_SIZE)
                    if not data:
                        return
                    drained += len(data)
            except trio.BrokenResourceError:
                return

    async def _receive_into(self, conn: _Conn) -> bytes:
        try:
            data = await conn.stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:
            data = b""  # a reset: as final as an EOF
        if not data:
            conn.peer_closed()
        conn.h11.receive_data(data)
        return data

    async def _receive_request(self, conn: _Conn) -> _Incoming | None:
        """The next whole request; None when the connection is over (peer gone, idle, garbage)."""
        request: h11.Request | None = None
        body = bytearray()
        seen = 0
        with trio.move_on_after(IDLE_TIMEOUT):
            try:
                # Bounded: every pass consumes input, which h11 caps for the head
                # and we cap for the body.
                while True:
                    event = conn.h11.next_event()
                    if event is h11.NEED_DATA:
                        await self._receive_into(conn)
                    elif isinstance(event, h11.Request):
                        request = event
                        # h11 caps only an *incomplete* head: one that completes
                        # within the read that crosses the cap gets through.
                        if _head_size(event) > MAX_HEADER_BYTES:
                            return _Incoming(event, b"", time.monotonic(), _TOO_LARGE_HEAD)
                        declared = _content_length(event)
                        if declared is not None and declared > MAX_DISCARD_BYTES:
                            return _Incoming(event, b"", time.monotonic(), _TOO_LARGE_BODY)
                    elif isinstance(event, h11.Data):
                        seen += len(event.data)
                        if seen <= MAX_BODY_BYTES:
                            body += event.data
                        elif seen > MAX_DISCARD_BYTES:
                            assert request is not None
                            return _Incoming(request, b"", time.monotonic(), _TOO_LARGE_BODY)
                    elif isinstance(event, h11.EndOfMessage):
                        assert request is not None
                        if seen > MAX_BODY_BYTES:
                            return _Incoming(request, b"", time.monotonic(), _TOO_LARGE_BODY)
                        return _Incoming(request, bytes(body), time.monotonic())
                    else:  # ConnectionClosed: an EOF between requests
                        return None
            except h11.RemoteProtocolError as exc:
                if conn.peer_closed_at is None and conn.h11.our_state in (
                    h11.IDLE,
                    h11.SEND_RESPONSE,
                ):
                    status = exc.error_status_hint
                    await self._send_simple(conn, status, _dumps({"error": str(exc)}), JSON_TYPE)
                return None
        return None  # idle: close, as a keep-alive timeout would

    async def _exchange(self, conn: _Conn, incoming: _Incoming) -> None:
        """Answer one request, recorded unless it is a control request."""
        path = _path(incoming.request)
        method = incoming.request.method
        conn.head_only = method == b"HEAD"
        if path.startswith(CONTROL_PREFIX) and incoming.reject is None:
            conn.record.control_requests += 1
            await self._control(conn, method, path)
            return
        generation: Generation | None = None
        parse_error: _HttpError | None = None
        if path in ("/api/chat", "/api/generate") and method == b"POST" and not incoming.reject:
            try:
                generation = parse_generation(
                    "chat" if path == "/api/chat" else "generate", incoming.body
                )
            except _HttpError as exc:
                parse_error = exc
        request = conn.current = self._begin(conn, incoming, generation, parse_error)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_peer, conn, nursery.cancel_scope)
                try:
                    await self._route(conn, request, incoming, generation, parse_error)
                except _Disconnect:
                    conn.disconnected = True
                    request.outcome = "fault_disconnect"
                except _PeerGone:
                    conn.peer_closed()
                nursery.cancel_scope.cancel()
        finally:
            conn.current = None
            self._end(conn, request)

    async def _watch_peer(self, conn: _Conn, answer: trio.CancelScope) -> None:
        fed = 0
        while fed <= MAX_PIPELINED_BYTES:
            data = await self._receive_into(conn)
            if not data:
                answer.cancel()
                return
            fed += len(data)
        await trio.sleep_forever()

    async def _route(
        self,
        conn: _Conn,
        request: RequestRecord,
        incoming: _Incoming,
        generation: Generation | None,
        parse_error: _HttpError | None,
    ) -> None:
        path, method = request.path, request.method
        allowed = _ROUTES.get(path)
        if incoming.reject is not None:
            await self._reject(conn, request, incoming.reject.status, incoming.reject.message)
        elif allowed is None:
            await self._reject(conn, request, 404, "404 page not found", json_body=False)
        elif method not in allowed and not (method == "HEAD" and "GET" in allowed):
            headers = [("allow", ", ".join(sorted(allowed)))]
            await self._reject(conn, request, 405, "405 method not allowed", False, headers)
        elif parse_error is not None:
            await self._reject(conn, request, parse_error.status, parse_error.message)
        elif generation is not None:
            await self._generate(conn, request, generation)
        elif path == "/api/show":
            try:
                body = _show(incoming.body)
            except _HttpError as exc:
                await self._reject(conn, request, exc.status, exc.message)
                return
            request.outcome = "completed"
            await self._send_simple(conn, 200, body, JSON_TYPE)
        else:
            request.outcome = "completed"
            await self._send_simple(conn, 200, *_STATIC[path]())

    async def _reject(
        self,
        conn: _Conn,
        request: RequestRecord,
        status: int,
        message: str,
        json_body: bool = True,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        request.outcome = "rejected"
        if json_body:
            await self._send_simple(conn, status, _dumps({"error": message}), JSON_TYPE, headers)
        else:
            await self._send_simple(conn, status, message.encode(), TEXT_TYPE, headers)

    async def _control(self, conn: _Conn, method: bytes, path: str) -> None:
        handlers: dict[tuple[bytes, str], Callable[[], Any]] = {
            (b"GET", "/_sim/connections"): lambda: [r.to_json() for r in self._records.values()],
            (b"GET", "/_sim/events"): lambda: [e.to_json() for e in self._events],
            (b"GET", "/_sim/stats"): lambda: self.stats().to_json(),
            (b"POST", "/_sim/reset"): self._reset_json,
        }
        handler = handlers.get((method, path))
        if handler is not None:
            await self._send_simple(conn, 200, _dumps(handler()), JSON_TYPE)
        elif any(p == path for _, p in handlers):
            await self._send_simple(conn, 405, b"405 method not allowed", TEXT_TYPE)
        else:
            await self._send_simple(conn, 404, b"404 page not found", TEXT_TYPE)

    def _reset_json(self) -> dict[str, str]:
        self.reset()
        return {"status": "reset"}

    # -- answering ------------------------------------------------------------------

    async def _generate(self, conn: _Conn, request: RequestRecord, gen: Generation) -> None:
        faults = gen.faults
        started = time.monotonic()
        if faults.stall_headers is not None:
            await trio.sleep(faults.stall_headers)
        if faults.status is not None:
            request.outcome = "error"
            error = _dumps({"error": "simulated internal error"})
            await self._send_simple(conn, faults.status, error, JSON_TYPE)
            return
        if not gen.prompt:
            request.outcome = "completed"
            await self._send_simple(conn, 200, _dumps(_load_response(gen)), JSON_TYPE)
            return
        count = self.answer_tokens if faults.tokens is None else faults.tokens
        answer = gen.plan() if gen.kind == "chat" else sim_answers.Plan()
        words = (
            answer_pieces(gen.prompt, gen.seed, count)
            if answer.text is None
            else [w if i == 0 else " " + w for i, w in enumerate(answer.text.split(" "))]
        )
        pieces, done_reason = plan_answer([] if answer.calls else words, gen.num_predict, gen.stop)
        writer: _Writer = _Streaming(self, conn, gen) if gen.stream else _Buffered(self, conn, gen)
        await writer.start()
        if gen.think and gen.kind == "chat":
            await writer.thinking("Thinking it over.")
        if answer.calls:
            await writer.tool_calls(
                [{"function": {"name": c.name, "arguments": c.arguments}} for c in answer.calls]
            )
        interval = faults.slow if faults.slow is not None else 1.0 / self.tokens_per_second
        eval_started = trio.current_time()
        next_at = eval_started
        for sent in range(len(pieces) + 1):
            last = sent == len(pieces)
            if _due(faults.malformed_after, sent, last):
                await writer.malformed()
            if _due(faults.error_after, sent, last):
                request.outcome = "error"
                await writer.error("simulated failure")
                return
            if _due(faults.disconnect_after, sent, last):
                raise _Disconnect
            if _due(faults.stall_after, sent, last):
                await trio.sleep_forever()
            if last:
                break
            next_at += interval
            await trio.sleep_until(next_at)
            await writer.token(pieces[sent])
        prompt_tokens = _prompt_tokens(gen.prompt)
        request.outcome = "completed"
        await writer.finish(
            {
                "done_reason": done_reason,
                "total_duration": int((time.monotonic() - started) * 1e9),
                "load_duration": 1_000_000,
                "prompt_eval_count": prompt_tokens,
                "prompt_eval_duration": prompt_tokens * 100_000,
                "eval_count": len(pieces),
                "eval_duration": int((trio.current_time() - eval_started) * 1e9),
            }
        )

    # -- h11 output -----------------------------------------------------------------

    async def _send(self, conn: _Conn, *events: h11.Event) -> None:
        """Send h11 events in one write.

        A response's last events go together with its EndOfMessage, and the
        request's end is recorded before that write: a client that has the
        whole response finds its end recorded.
        """
        data = b"".join(conn.h11.send(event) or b"" for event in events)
        current = conn.current
        if current is not None and any(isinstance(e, h11.EndOfMessage) for e in events):
            self._end(conn, current)
        if not data:
            return
        if current is not None and current.first_byte is None:
            current.first_byte = time.monotonic()
            self._touch()
        try:
            await conn.stream.send_all(data)
        except trio.BrokenResourceError:
            conn.peer_closed()
            raise _PeerGone from None

    def _head(self, conn: _Conn, status: int, headers: Sequence[tuple[str, str]]) -> h11.Response:
        if conn.current is not None:
            conn.current.status = status
        all_headers = [("date", email.utils.formatdate(usegmt=True)), *headers]
        reason = http.HTTPStatus(status).phrase.encode() if status in _KNOWN_STATUSES else b""
        return h11.Response(status_code=status, headers=all_headers, reason=reason)

    async def _send_simple(
        self,
        conn: _Conn,
        status: int,
        body: bytes,
        content_type: str,
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        fixed = [("content-type", content_type), ("content-length", str(len(body)))]
        head = self._head(conn, status, [*fixed, *headers])
        if conn.head_only:
            await self._send(conn, head, h11.EndOfMessage())
        else:
            await self._send(conn, head, h11.Data(data=body), h11.EndOfMessage())


_KNOWN_STATUSES = {s.value for s in http.HTTPStatus}


def _logprob(token: str, top: int) -> dict[str, Any]:
    """A made-up log probability in Ollama's shape (``logprobs: true``)."""
    entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    if top:
        entry["top_logprobs"] = [
            {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
        ] + [{"token": f"alt{i}", "logprob": -3.0 - i, "bytes": []} for i in range(top - 1)]
    return entry


def _due(after: int | None, sent: int, last: bool) -> bool:
    return after is not None and (after == sent or (last and after > sent))


def _load_response(gen: Generation) -> dict[str, Any]:
    out: dict[str, Any] = {"model": gen.model, "created_at": _created_at()}
    if gen.kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return {**out, "done": True, "done_reason": "load"}


class _Writer(abc.ABC):
    """Where an answer's tokens go: a stream of lines, or one object at the end."""

    def __init__(self, sim: OllamaSim, conn: _Conn, gen: Generation) -> None:
        self.sim = sim
        self.conn = conn
        self.gen = gen

    def chunk(self, content: str, done: bool, **message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.gen.model, "created_at": _created_at()}
        if self.gen.kind == "chat":
            out["message"] = {"role": "assistant", "content": content, **message}
        else:
            out["response"] = content
        out["done"] = done
        if self.gen.logprobs and content:
            out["logprobs"] = [_logprob(content, self.gen.top_logprobs)]
        return out

    async def thinking(self, text: str) -> None:
        """The model's reasoning before its answer (``think``)."""
        await self.extra_line(thinking=text)

    async def tool_calls(self, calls: list[dict[str, Any]]) -> None:
        """Tool calls, in one message as Ollama sends them."""
        await self.extra_line(tool_calls=calls)

    @abc.abstractmethod
    async def extra_line(self, **message: Any) -> None:
        """A message with fields besides content (thinking, tool calls)."""

    def count_token(self) -> None:
        assert self.conn.current is not None
        self.conn.current.tokens_sent += 1
        self.sim._touch()

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def token(self, piece: str) -> None: ...

    @abc.abstractmethod
    async def malformed(self) -> None: ...

    @abc.abstractmethod
    async def error(self, message: str) -> None: ...

    @abc.abstractmethod
    async def finish(self, final: dict[str, Any]) -> None: ...


class _Streaming(_Writer):
    """One chunk per line, sent as it is made."""

    async def start(self) -> None:
        head = self.sim._head(self.conn, 200, [("content-type", NDJSON_TYPE)])
        await self.sim._send(self.conn, head)

    async def line(self, data: bytes, *, last: bool = False) -> None:
        events: list[h11.Event] = [h11.Data(data=data + b"\n")]
        if last:
            events.append(h11.EndOfMessage())
        await self.sim._send(self.conn, *events)

    async def token(self, piece: str) -> None:
        self.count_token()  # first: the record may run ahead of the wire, never behind
        await self.line(_dumps(self.chunk(piece, done=False)))

    async def extra_line(self, **message: Any) -> None:
        await self.line(_dumps(self.chunk("", done=False, **message)))

    async def malformed(self) -> None:
        whole = _dumps(self.chunk("x", done=False))
        await self.line(whole[: whole.index(b',"done"')])

    async def error(self, message: str) -> None:
        await self.line(_dumps({"error": message}), last=True)

    async def finish(self, final: dict[str, Any]) -> None:
        await self.line(_dumps({**self.chunk("", done=True), **final}), last=True)


class _Buffered(_Writer):
    """``stream: false``: nothing is sent until the answer is complete."""

    def __init__(self, sim: OllamaSim, conn: _Conn, gen: Generation) -> None:
        super().__init__(sim, conn, gen)
        self.text = ""
        self.tokens = 0
        self.truncate = False
        self.message: dict[str, Any] = {}

    async def start(self) -> None:
        return None

    async def token(self, piece: str) -> None:
        self.text += piece
        self.tokens += 1

    async def extra_line(self, **message: Any) -> None:
        self.message.update(message)

    async def malformed(self) -> None:
        self.truncate = True

    async def error(self, message: str) -> None:
        await self.sim._send_simple(self.conn, 500, _dumps({"error": message}), JSON_TYPE)

    async def finish(self, final: dict[str, Any]) -> None:
        body = _dumps({**self.chunk(self.text, done=True, **self.message), **final})
        if self.truncate:
            body = body[: len(body) // 2]
        for _ in range(self.tokens):
            self.count_token()
        await self.sim._send_simple(self.conn, 200, body, JSON_TYPE)


def _version() -> tuple[bytes, str]:
    return _dumps({"version": OLLAMA_VERSION}), JSON_TYPE


def _tags() -> tuple[bytes, str]:
    return _dumps({"models": [m.to_json() for m in MODELS]}), JSON_TYPE


def _show(raw: bytes) -> bytes:
    """``/api/show``: the model's details, as Ollama shows them (faults are refused)."""
    try:
        data = json.loads(raw) if raw.strip() else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _HttpError(400, f"invalid JSON: {exc}") from None
    name = (data.get("model") or data.get("name")) if isinstance(data, dict) else None
    if not isinstance(name, str) or not name:
        raise _HttpError(400, "model is required")
    model = _MODELS_BY_NAME.get(name if ":" in name else name + ":latest")
    if model is None:
        raise _HttpError(404, f"model '{name}' not found")
    listed = model.to_json()
    return _dumps(
        {
            "modelfile": f"# Modelfile generated by the simulator\nFROM {model.name}\n",
            "parameters": 'stop                           "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": listed["details"],
            "model_info": {
                "general.architecture": model.family,
                f"{model.family}.context_length": 131072,
            },
            "capabilities": ["completion", "tools"],
            "modified_at": listed["modified_at"],
        }
    )


def _root() -> tuple[bytes, str]:
    return b"Ollama is running", TEXT_TYPE


_STATIC: dict[str, Callable[[], tuple[bytes, str]]] = {
    "/": _root,
    "/api/version": _version,
    "/api/tags": _tags,
}
_ROUTES: dict[str, frozenset[str]] = {
    "/": frozenset({"GET", "HEAD"}),
    "/api/version": frozenset({"GET", "HEAD"}),
    "/api/tags": frozenset({"GET", "HEAD"}),
    "/api/chat": frozenset({"POST"}),
    "/api/generate": frozenset({"POST"}),
    "/api/show": frozenset({"POST"}),
}


def _path(request: h11.Request) -> str:
    return request.target.decode("ascii", "replace").split("?", 1)[0]


_TOO_LARGE_HEAD = _HttpError(431, "request header fields too large")
_TOO_LARGE_BODY = _HttpError(413, "request body too large")


def _head_size(request: h11.Request) -> int:
    """At least the head's size on the wire (``name: value\r\n`` per header)."""
    return len(request.target) + sum(len(name) + len(value) + 4 for name, value in request.headers)


def _content_length(request: h11.Request) -> int | None:
    for name, value in request.headers:
        if name == b"content-length":
            return int(value)  # h11 has validated it
    return None


# -- entry points ---------------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ollama-sim", description="A fault-injecting Ollama server for tests."
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback address (127.0.0.1)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (0: any)")
    parser.add_argument("--tokens-per-second", type=float, default=50.0, help="answer pace")
    parser.add_argument("--answer-tokens", type=int, default=40, help="answer length")
    return parser


async def _serve_until_signal(args: argparse.Namespace) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            start: Callable[..., Awaitable[None]] = partial(
                serve_ollama_sim,
                args.host,
                args.port,
                tokens_per_second=args.tokens_per_second,
                answer_tokens=args.answer_tokens,
            )
            sim: OllamaSim = await nursery.start(start)
            print(f"ollama_sim listening url={sim.url}", file=sys.stderr, flush=True)
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()


def main(argv: list[str] | None = None) -> int:
    """Serve on ``--host``/``--port`` until SIGINT or SIGTERM."""
    args = build_parser().parse_args(argv)
    if not is_loopback(args.host):
        print(f"ollama_sim: only loopback addresses, not {args.host!r}", file=sys.stderr)
        return 2
    if not args.tokens_per_second > 0 or not 0 <= args.answer_tokens <= MAX_ANSWER_TOKENS:
        print(
            f"ollama_sim: --tokens-per-second must be > 0, --answer-tokens 0..{MAX_ANSWER_TOKENS}",
            file=sys.stderr,
        )
        return 2
    try:
        trio.run(_serve_until_signal, args)
    except OSError as exc:
        print(f"ollama_sim: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a SIGINT before the signal receiver was in place
        pass
    return 0
