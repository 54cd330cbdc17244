"""What the session manager answers about itself: plain data, for the HTTP edge."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StopReport:
    """What Stop did. ``result``: ``finished_cleanly``, ``join_timeout``, ``nothing_live``
    (or, cancelling one request that was still waiting, ``never_started``)."""

    result: str
    stream_id: str | None = None
    waited_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One entry of ``GET /v1/requests``."""

    id: str
    session_id: str | None
    request_id: str
    model: str
    state: str  # waiting, live, cancelling, zombie
    age_seconds: float
    tokens: int


@dataclass(frozen=True, slots=True)
class ManagerStatistics:
    sessions: int
    live_streams: int
    # Admission: streams holding a slot (live, cancelling, zombie), the bound, requests
    # waiting for their session's previous stream, and refusals by reason.
    running_streams: int = 0
    max_streams: int = 0
    waiting_streams: int = 0
    refused: dict[str, int] = field(default_factory=dict)
