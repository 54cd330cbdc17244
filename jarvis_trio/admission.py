"""Who may open a stream while the gateway is busy: the admission rules.

Like :mod:`jarvis_trio.rules`, this file imports neither trio nor anything HTTP,
does no I/O and reads no clock; the session manager asks it and carries out the
verdict.

Theory of operation
-------------------
A *slot* is one running stream: live, being cancelled (joined), or a zombie (past
its join, still ending). A running stream is what costs: a worker thread while it
reads, an upstream connection, a client socket, its buffers. ``limit`` bounds them,
and the thread limiter is sized above it, so an admitted stream never waits for a
thread without a word (the wait that used to be silent, inside the backend's call).

A new request is judged before it touches its session:

1. While the server shuts down, nobody is admitted (503 ``shutting_down``).
2. A request of a session that already runs a stream is admitted, even when the
   gateway is full: it supersedes (or waits to follow) that stream, and starts only
   once that stream's slot is free. A new prompt is never refused for the slot its
   own predecessor holds.
3. Otherwise a request is admitted while fewer than ``limit`` slots are taken.
4. Otherwise it is refused at once (429 ``gateway_full``) with a ``Retry-After``.

Requests waiting for their session's previous stream hold no slot, and there is at
most one per session (latest wins), so they are bounded by the running streams too.

The count exceeds ``limit`` only through zombies: a session whose join ran out of
budget starts its next request beside the zombie. New sessions are then refused
until the count is back under the limit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from jarvis_trio.errors import ApiError, ServiceUnavailable, TooManyRequests
from jarvis_trio.rules import RuleError


class Refusal(enum.StrEnum):
    """Why a request was not admitted."""

    FULL = "full"
    SHUTTING_DOWN = "shutting_down"


@dataclass(frozen=True, slots=True)
class Admit:
    """The request may go to its session."""


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the request at once; the client may try again after ``retry_after`` s."""

    reason: Refusal
    retry_after: float


Verdict = Admit | Refuse


@dataclass
class Admission:
    """The gateway's slots. Every method is a transition or a query; none blocks."""

    limit: int
    retry_after: float = 1.0
    running: int = 0
    closing: bool = False
    refused: dict[Refusal, int] = field(default_factory=lambda: dict.fromkeys(Refusal, 0))

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise RuleError("limit must be >= 1")
        if self.retry_after <= 0:
            raise RuleError("retry_after must be > 0")

    @property
    def full(self) -> bool:
        return self.running >= self.limit

    def arrive(self, *, session_running: bool) -> Verdict:
        """A request arrives; ``session_running``: its session runs a stream now."""
        if self.closing:
            return self._refuse(Refusal.SHUTTING_DOWN)
        if session_running or not self.full:
            return Admit()
        return self._refuse(Refusal.FULL)

    def started(self) -> None:
        """A stream started: it takes a slot (its session's, when it followed one)."""
        self.running += 1

    def ended(self) -> None:
        """A started stream was released: its slot is free."""
        if self.running <= 0:
            raise RuleError("a stream ended that never started")
        self.running -= 1

    def close(self) -> None:
        """The server is shutting down: refuse everyone from now on."""
        self.closing = True

    def _refuse(self, reason: Refusal) -> Refuse:
        self.refused[reason] += 1
        return Refuse(reason, self.retry_after)


def refusal_error(verdict: Refuse, admission: Admission) -> ApiError:
    """What a refused request is answered: 503 while shutting down, else 429."""
    if verdict.reason is Refusal.SHUTTING_DOWN:
        return ServiceUnavailable(
            "The server is shutting down.",
            code="shutting_down",
            retry_after=verdict.retry_after,
        )
    return TooManyRequests(
        f"The gateway is full ({admission.running} of {admission.limit} streams "
        f"running). Try again in {verdict.retry_after:g} s.",
        code="gateway_full",
        retry_after=verdict.retry_after,
    )
