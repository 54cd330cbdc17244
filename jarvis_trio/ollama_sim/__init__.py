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

The modules, each with one job:

- :mod:`.models`: the models it serves (``/api/tags``, ``/api/show``);
- :mod:`.faults`: the faults a model name asks for;
- :mod:`.requests`: ``/api/chat`` and ``/api/generate`` bodies, validated;
- :mod:`.answers`: what it answers (with :mod:`jarvis_trio.sim_answers`);
- :mod:`.records`: what it records about connections and requests, for tests;
- :mod:`.connection`: one connection's reads and writes;
- :mod:`.streaming`: an answer on the wire, paced, faults fired;
- :mod:`.server`: :class:`OllamaSim`, routing each request;
- :mod:`.cli`: the command line (``jarvis-trio sim-ollama``).

This package re-exports what tests and benchmarks import.
"""

from jarvis_trio.ollama_sim.answers import answer_pieces, plan_answer
from jarvis_trio.ollama_sim.cli import DEFAULT_PORT, build_parser, main
from jarvis_trio.ollama_sim.connection import MAX_BODY_BYTES, MAX_HEADER_BYTES
from jarvis_trio.ollama_sim.faults import MAX_ANSWER_TOKENS, Faults, parse_model
from jarvis_trio.ollama_sim.models import MODELS, OLLAMA_VERSION, FakeModel
from jarvis_trio.ollama_sim.records import (
    MAX_CLOSED_RECORDS,
    MAX_EVENTS,
    ConnectionRecord,
    RequestRecord,
    SimEvent,
    SimStats,
)
from jarvis_trio.ollama_sim.server import OllamaSim, serve_ollama_sim

__all__ = [
    "DEFAULT_PORT",
    "MAX_ANSWER_TOKENS",
    "MAX_BODY_BYTES",
    "MAX_CLOSED_RECORDS",
    "MAX_EVENTS",
    "MAX_HEADER_BYTES",
    "MODELS",
    "OLLAMA_VERSION",
    "ConnectionRecord",
    "FakeModel",
    "Faults",
    "OllamaSim",
    "RequestRecord",
    "SimEvent",
    "SimStats",
    "answer_pieces",
    "build_parser",
    "main",
    "parse_model",
    "plan_answer",
    "serve_ollama_sim",
]
