"""Where a session's one-live-stream rule is enforced: in this process, or across processes.

The default is in memory: each process's :class:`~jarvis_trio.sessions.SessionManager`
keeps its sessions' :class:`~jarvis_trio.rules.SessionRules`, which is all one process
needs, and no :class:`Registry` is configured (no extra await, no extra latency).

With ``JARVIS_REGISTRY_URL=redis://...`` a :class:`Registry` is added on top: the local
rules still order the streams of a session inside each process, and the registry
orders them across processes (:mod:`jarvis_trio.registry.fencing` explains how).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import trio

from jarvis_trio.registry.fencing import Message, TakeResult


@dataclass(frozen=True, slots=True)
class Claim:
    """One request's place in its session, across processes."""

    session: str  # the session's digest, equal in every process
    generation: int  # only grows; the newest one streams
    owner_label: str  # for upstream ``X-Jarvis-Session`` headers, equal in every process
    contended: bool  # a stream held the session's lease when this was claimed
    claimed_at: float  # trio time: the join budget is counted from here


class Registry(Protocol):
    """The small interface the session manager uses. Every call is bounded by a
    timeout and raises :class:`~jarvis_trio.errors.RegistryUnavailable` past it."""

    worker: str  # this process, in logs and messages
    timeout: float  # bound of one Redis call's connect and reply

    @property
    def lease_seconds(self) -> float:
        """A lease not renewed for this long expires."""

    async def serve(
        self,
        on_cancel: Callable[[Message], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen for other processes' messages until cancelled; ``on_cancel`` gets
        every cancel (own ones included), in the order they were published."""

    async def claim(self, owner: str, session_id: str, *, stop: bool = False) -> Claim:
        """Take a new generation for the session and tell every process to cancel
        its older streams of it (as superseded, or with ``stop`` as stopped)."""

    async def take(self, claim: Claim, deadline: float) -> TakeResult:
        """Wait (until ``deadline`` at most) for the session's lease, then take it;
        never ``BUSY``."""

    async def wait_stopped(self, claim: Claim, deadline: float) -> str:
        """For a Stop's claim: wait (until ``deadline``) for the stream it stopped to
        give the lease back, then give it back too; the Stop endpoint's ``result``."""

    async def renew(self, claim: Claim) -> bool:
        """Extend the lease; ``False`` when a newer generation was claimed."""

    async def release(self, claim: Claim) -> None:
        """Give the lease back (if still ours) and tell waiters it is free."""

    async def aclose(self) -> None: ...
