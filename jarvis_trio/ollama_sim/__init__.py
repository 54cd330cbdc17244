"""A fault-injecting Ollama server for tests: real HTTP on loopback, on trio sockets and h11.

It speaks the part of Ollama's API a gateway uses, answers deterministically, and
misbehaves on request (faults chosen per request through the model name,
``llama3.2:1b+slow=0.2+disconnect_after=3``), so tests can watch what the gateway
does to its upstream and *when* it closes it. What it answers, every fault, and
what it records are described in the reference page ``docs/reference/ollama-sim.md``
(the site's *Reference → Ollama simulator*).

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
