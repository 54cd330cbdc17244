"""How a stream ended, and what each ending means on the wire. Pure: no trio, no HTTP."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from jarvis_trio.errors import ApiError, ServiceUnavailable, StreamEnded
from jarvis_trio.generation import GenerationResult, Usage
from jarvis_trio.rules import CancelReason


class Outcome(enum.StrEnum):
    COMPLETED = "completed"
    SUPERSEDED = "superseded"
    STOPPED = "stopped"
    DISCONNECTED = "disconnected"
    INACTIVITY = "inactivity"
    FIRST_TOKEN_TIMEOUT = "first_token_timeout"
    SHUTDOWN = "shutdown"
    UPSTREAM_ERROR = "upstream_error"
    ERROR = "error"


_ENDED_EARLY = {
    Outcome.SUPERSEDED: "A newer request in this session superseded this one.",
    Outcome.STOPPED: "The stream was stopped by a cancel request for its session.",
    Outcome.DISCONNECTED: "The client disconnected.",
}


@dataclass(frozen=True, slots=True)
class Ending:
    outcome: Outcome
    finish_reason: str | None = None
    usage: Usage | None = None
    error: ApiError | None = None
    # The upstream's own top-level keys for the last chunk or the body (``timings``...).
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def completed(cls, result: GenerationResult) -> Ending:
        return cls(Outcome.COMPLETED, result.finish_reason, result.usage, extra=result.extra)

    @classmethod
    def cancelled(cls, reason: CancelReason, usage: Usage | None = None) -> Ending:
        """Ended early on purpose: the stream's last chunk says why (``jarvis.outcome``)."""
        return cls(Outcome(reason.value), usage=usage)

    def as_error(self) -> ApiError | None:
        """What a non-streaming client gets instead of a completion (``None``: completed)."""
        if self.outcome is Outcome.COMPLETED:
            return None
        if self.error is not None:
            return self.error
        if self.outcome is Outcome.SHUTDOWN:
            return ServiceUnavailable("The server is shutting down.", code="shutting_down")
        message = _ENDED_EARLY.get(self.outcome, "The stream ended early.")
        return StreamEnded(self.outcome.value, message)
