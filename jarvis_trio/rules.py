"""The rules of one session: who is live, who waits, who is superseded.

Rule 1: everything that decides the order of streams in a session lives in
this file. It imports neither trio nor anything HTTP, does no I/O and reads
no clock: callers pass ``now`` in, and get back *what to do* as a list of
frozen actions. The trio glue (:mod:`jarvis_trio.sessions`) carries them out.

Theory of operation
-------------------
A session is always in one of three shapes::

    Idle ──submit──▶ Live(L) ──submit(B)──▶ Dying(L, deadline, waiter=B)
     ▲                 │ release(L)             │ release(L)        ─▶ Live(B)
     └─────────────────┘                        │ deadline passed   ─▶ Live(B), L is a zombie
                                                │ submit(C)         ─▶ B rejected, waiter=C

* **Live(L)**: L is the only stream allowed to emit output.
* **Dying(P, deadline, waiter)**: P was cancelled and is being joined. The
  newest request (if any) waits for P to finish, but never past
  ``deadline`` = the moment P was cancelled + the join budget. A newer
  request replaces the waiter at once (latest wins), and the replaced one is
  rejected without ever starting.
* **Zombies** are cancelled streams whose join ran out of budget. They no
  longer block anything, may not emit, and are forgotten when released.

A stream is *released* when it is over on both sides: its task has ended and
its reader is done. Releasing the dying stream is a join that finished within
its budget (``Joined``); running out of budget is ``JoinTimedOut``. These two
actions are the only places a join is decided, so the glue only counts them.

The deadline is anchored to the cancel, not to each waiter's arrival: in a
storm of requests the newest one still starts at most one budget after the
stream it replaced was cancelled.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

StreamId = str


class CancelReason(enum.StrEnum):
    """Why a stream (or a request that never started) was ended early."""

    SUPERSEDED = "superseded"
    STOPPED = "stopped"
    DISCONNECTED = "disconnected"
    INACTIVITY = "inactivity"
    SHUTDOWN = "shutdown"


class RuleError(Exception):
    """A transition the rules do not allow: a bug in the caller, never user input."""


# --- Actions: what the glue must do -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """Start ``stream``: it is now the session's live stream.

    ``after`` is the cancelled stream it waited for, if any, and ``clean``
    says whether that stream finished within the budget (``True``) or the
    join timed out (``False``).
    """

    stream: StreamId
    after: StreamId | None = None
    clean: bool = True


@dataclass(frozen=True, slots=True)
class Cancel:
    """Cancel the running ``stream``'s scope; it must emit nothing more."""

    stream: StreamId
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class Reject:
    """End a waiting request that never started."""

    stream: StreamId
    reason: CancelReason


@dataclass(frozen=True, slots=True)
class JoinTimedOut:
    """``stream`` did not finish within the join budget; it is now a zombie."""

    stream: StreamId


@dataclass(frozen=True, slots=True)
class Joined:
    """The cancelled ``stream`` was released within its join budget (a clean join)."""

    stream: StreamId


Action = Start | Cancel | Reject | JoinTimedOut | Joined


class StreamState(enum.StrEnum):
    """Where one stream stands in its session (``GET /v1/requests`` shows it)."""

    WAITING = "waiting"
    LIVE = "live"
    CANCELLING = "cancelling"
    ZOMBIE = "zombie"


@dataclass(frozen=True, slots=True)
class Wait:
    """The submitted request waits for ``joining`` until ``deadline`` at most."""

    joining: StreamId
    deadline: float


@dataclass(frozen=True, slots=True)
class SessionSnapshot:
    live: StreamId | None
    dying: StreamId | None
    waiter: StreamId | None
    zombies: frozenset[StreamId]


# --- The state machine --------------------------------------------------------------


@dataclass
class SessionRules:
    """One session's state. Every method is a transition; none blocks."""

    join_budget: float
    # Invariant: ``live`` and ``dying`` are never both set.
    live: StreamId | None = None
    # The cancelled stream being joined; blocks new starts until ``deadline``.
    dying: StreamId | None = None
    deadline: float = 0.0
    # Invariant: a waiter exists only while ``dying`` is set.
    waiter: StreamId | None = None
    zombies: set[StreamId] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.join_budget < 0:
            raise RuleError("join_budget must be >= 0")

    # -- queries

    @property
    def idle(self) -> bool:
        """Nothing live, nothing dying, nobody waiting, no zombie still running."""
        return self.live is None and self.dying is None and not self.zombies

    def snapshot(self) -> SessionSnapshot:
        return SessionSnapshot(self.live, self.dying, self.waiter, frozenset(self.zombies))

    def state_of(self, stream: StreamId) -> StreamState | None:
        """Where ``stream`` stands; ``None`` if the rules do not know it (released)."""
        if stream == self.waiter:
            return StreamState.WAITING
        if stream == self.live:
            return StreamState.LIVE
        if stream == self.dying:
            return StreamState.CANCELLING
        if stream in self.zombies:
            return StreamState.ZOMBIE
        return None

    def join_deadline(self, stream: StreamId) -> float | None:
        """Until when ``stream`` is joined, if it is the one being cancelled."""
        return self.deadline if stream == self.dying else None

    def running(self) -> set[StreamId]:
        """Streams whose tasks may still be running (live, dying or zombie)."""
        out = set(self.zombies)
        for stream in (self.live, self.dying):
            if stream is not None:
                out.add(stream)
        return out

    # -- transitions

    def submit(self, stream: StreamId, now: float) -> tuple[list[Action], Wait | None]:
        """A new request arrives. It starts now, or waits for a join (``Wait``)."""
        if stream in self.running() or stream == self.waiter:
            raise RuleError(f"stream {stream!r} was already submitted")
        actions: list[Action] = []
        # Latest wins: an older waiter is rejected before anything could promote it.
        if self.waiter is not None:
            actions.append(Reject(self.waiter, CancelReason.SUPERSEDED))
            self.waiter = None
        if self.live is not None:
            actions.append(self._cancel_live(CancelReason.SUPERSEDED, now))
        elif self.dying is not None and now >= self.deadline:
            actions.extend(self._expire_dying())
        if self.dying is None:
            self.live = stream
            actions.append(Start(stream))
            return actions, None
        self.waiter = stream
        return actions, Wait(self.dying, self.deadline)

    def release(self, stream: StreamId) -> list[Action]:
        """A started stream is over on both sides (its task and its reader)."""
        if stream == self.live:
            self.live = None
            return []
        if stream == self.dying:
            self.dying = None
            waiter, self.waiter = self.waiter, None
            if waiter is None:
                return [Joined(stream)]
            self.live = waiter
            return [Joined(stream), Start(waiter, after=stream, clean=True)]
        if stream in self.zombies:
            self.zombies.discard(stream)
            return []
        raise RuleError(f"stream {stream!r} is not running")

    def deadline_passed(self, now: float) -> list[Action]:
        """The join budget may have run out; a no-op if it has not, or was resolved."""
        if self.dying is None or now < self.deadline:
            return []
        return self._expire_dying()

    def cancel(self, stream: StreamId, reason: CancelReason, now: float) -> list[Action]:
        """End one request early: its client left, it was idle too long, ...

        Unknown or already-cancelled streams are a no-op: a disconnect can race
        the stream's own end.
        """
        if stream == self.waiter:
            self.waiter = None
            return [Reject(stream, reason)]
        if stream == self.live:
            return [self._cancel_live(reason, now)]
        return []

    def cancel_all(self, reason: CancelReason, now: float) -> tuple[list[Action], Wait | None]:
        """Stop or shutdown: reject the waiter, cancel the live stream.

        Returns the join the caller should wait for (the stream that is now
        dying), or ``None`` when nothing was running.
        """
        actions: list[Action] = []
        if self.waiter is not None:
            actions.append(Reject(self.waiter, reason))
            self.waiter = None
        if self.live is not None:
            actions.append(self._cancel_live(reason, now))
        if self.dying is None:
            return actions, None
        return actions, Wait(self.dying, self.deadline)

    # -- helpers

    def _cancel_live(self, reason: CancelReason, now: float) -> Cancel:
        assert self.live is not None and self.dying is None
        stream, self.live = self.live, None
        self.dying, self.deadline = stream, now + self.join_budget
        return Cancel(stream, reason)

    def _expire_dying(self) -> list[Action]:
        assert self.dying is not None
        stream, self.dying = self.dying, None
        self.zombies.add(stream)
        actions: list[Action] = [JoinTimedOut(stream)]
        waiter, self.waiter = self.waiter, None
        if waiter is not None:
            self.live = waiter
            actions.append(Start(waiter, after=stream, clean=False))
        return actions
