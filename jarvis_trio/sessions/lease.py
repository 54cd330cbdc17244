"""One stream's hold on its session across processes (with a registry).

The local rules decide first; a started stream then *takes* the session's lease
before it reaches the model (waiting, within the join budget counted from its
claim, for another process's stream to finish), *keeps* it by renewing while it
runs, and *gives it back* once it is released. A renewal that finds a newer
generation, or that cannot reach the registry for two intervals, means the
stream must end as superseded: the lease tells its owner through ``on_stale``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio

from jarvis_trio import logs
from jarvis_trio.errors import RegistryUnavailable
from jarvis_trio.registry import Claim, Registry
from jarvis_trio.registry.fencing import TakeResult, renew_interval


class Lease:
    def __init__(self, registry: Registry, claim: Claim, trace: str) -> None:
        self.registry = registry
        self.claim = claim
        self.trace = trace
        # Set before the take: if it is cancelled (or times out) after Redis ran it,
        # the release still happens (it deletes the lease only if it is this
        # generation's).
        self.taken = False
        self._given_back = trio.Event()

    async def take(self, join_budget: float, session_label: str | None) -> bool:
        """Take the lease; ``False``: a newer generation holds the session (stale)."""
        started = trio.current_time()
        self.taken = True
        result = await self.registry.take(self.claim, self.claim.claimed_at + join_budget)
        waited_ms = round((trio.current_time() - started) * 1000, 1)
        if result is TakeResult.STALE:
            self._log_stale()
            return False
        if result is TakeResult.FORCED:
            logs.event(
                "prev_stream_timeout_on_cancel",
                level=logging.WARNING,
                session=session_label,
                trace=self.trace,
                remote=True,
                waited_ms=waited_ms,
            )
        logs.event(
            "lease_taken", trace=self.trace, worker=self.registry.worker, waited_ms=waited_ms
        )
        return True

    async def keep(self, on_stale: Callable[[], None]) -> None:
        """Renew until given back. A renewal that finds a newer generation (the cancel
        message was missed), or none that succeeds for two intervals (the lease may
        expire and another process take the session), calls ``on_stale`` and ends."""
        interval = renew_interval(self.registry.lease_seconds)
        renewed_at = trio.current_time()
        while not self._given_back.is_set():
            with trio.move_on_after(interval):
                await self._given_back.wait()
            if self._given_back.is_set():
                return
            try:
                current = await self.registry.renew(self.claim)
            except RegistryUnavailable:
                logs.event("lease_renew_failed", level=logging.WARNING, trace=self.trace)
                if trio.current_time() - renewed_at >= 2 * interval:
                    self._log_stale()  # self-fencing: stop first, as a stream superseded
                    on_stale()
                    return
                continue
            renewed_at = trio.current_time()
            if not current:
                self._log_stale()
                on_stale()
                return

    def give_back(self, nursery: trio.Nursery) -> None:
        """The stream was released: stop renewing, and release the lease if taken."""
        self._given_back.set()
        if self.taken:
            nursery.start_soon(self._release)

    async def _release(self) -> None:
        # Also during shutdown, briefly: a lease left behind blocks the session's next
        # request on another process until it expires.
        bound = 2 * self.registry.timeout + 1
        with trio.CancelScope(shield=True), trio.move_on_after(bound):
            try:
                await self.registry.release(self.claim)
            except RegistryUnavailable:
                logs.event("lease_release_failed", level=logging.WARNING, trace=self.trace)

    def _log_stale(self) -> None:
        logs.event("registry_stale", trace=self.trace, worker=self.registry.worker)
