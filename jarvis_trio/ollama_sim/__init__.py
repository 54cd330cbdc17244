"""A fault-injecting Ollama server for tests: real HTTP on loopback, on trio sockets and h11.

Everything lives in :mod:`.server` for now; this package re-exports what callers import.
"""

from jarvis_trio.ollama_sim.server import (
    DEFAULT_PORT,
    MAX_ANSWER_TOKENS,
    MAX_BODY_BYTES,
    MAX_CLOSED_RECORDS,
    MAX_EVENTS,
    MAX_HEADER_BYTES,
    MODELS,
    OLLAMA_VERSION,
    ConnectionRecord,
    FakeModel,
    Faults,
    OllamaSim,
    RequestRecord,
    SimEvent,
    SimStats,
    answer_pieces,
    build_parser,
    main,
    parse_model,
    plan_answer,
    serve_ollama_sim,
)

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
