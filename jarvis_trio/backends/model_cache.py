"""The upstream's model list, kept so a request that names no model asks nothing upstream.

Theory of operation
-------------------
A request without ``model`` gets the upstream's first listed model. Asking the
upstream (``GET /models``, Ollama's ``/api/tags``) on the request path put a
round trip before the session could act: in front of a llama.cpp server a
supersede reached the upstream in 29 ms p50 instead of 10. So:

* a list younger than ``ttl`` is used as is;
* an older one is still used, and a refresh is started in the background
  (:meth:`ModelCache.run` must be running for that; without it, the caller
  refreshes inline);
* with no list yet (the first such request, or only empty or failed answers so
  far) the request goes to its session *first*: its backend resolves the model
  inside the stream's task (:meth:`ModelCache.get`), after the supersede, within the
  stream's cancel scope.

:meth:`freshness` is the pure part, time passed in.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Awaitable, Callable

import trio

from jarvis_trio.generation import ModelInfo


class Freshness(enum.Enum):
    MISSING = "missing"  # nothing usable: ask the upstream
    FRESH = "fresh"  # use it
    STALE = "stale"  # use it, and refresh it in the background


def freshness(fetched_at: float | None, now: float, ttl: float, *, empty: bool) -> Freshness:
    """What a list fetched at ``fetched_at`` (None: never) is worth at ``now``."""
    if fetched_at is None or empty:
        return Freshness.MISSING
    return Freshness.FRESH if now - fetched_at < ttl else Freshness.STALE


class ModelCache:
    def __init__(self, fetch: Callable[[], Awaitable[list[ModelInfo]]], *, ttl: float) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self._models: list[ModelInfo] = []
        self._fetched_at: float | None = None
        self._nursery: trio.Nursery | None = None
        self._refreshing = False

    def store(self, models: list[ModelInfo]) -> None:
        """A fresh answer from the upstream (also one fetched for ``GET /v1/models``)."""
        self._models, self._fetched_at = list(models), trio.current_time()

    def _state(self) -> Freshness:
        now = trio.current_time()
        return freshness(self._fetched_at, now, self.ttl, empty=not self._models)

    def peek(self) -> list[ModelInfo] | None:
        """The list without waiting, if there is one; a stale one is refreshed in the
        background (when :meth:`run` runs). ``None``: call :meth:`get` where a wait is fine."""
        state = self._state()
        if state is Freshness.MISSING:
            return None
        if state is Freshness.STALE:
            if self._nursery is None:
                return None  # nobody refreshes in the background: the caller does
            if not self._refreshing:
                self._refreshing = True
                self._nursery.start_soon(self._refresh_in_background)
        return self._models

    async def get(self) -> list[ModelInfo]:
        """The list, fetched now unless a fresh one (or a stale one being refreshed) is kept.

        Raises what the fetch raised (an unreachable upstream, say)."""
        models = self.peek()
        if models is not None:
            return models
        models = await self._fetch()
        self.store(models)
        return models

    async def _refresh_in_background(self) -> None:
        try:
            # A failure keeps the stale list in use; the next request past the TTL tries
            # again (one refresh at a time).
            with contextlib.suppress(Exception):
                self.store(await self._fetch())
        finally:
            self._refreshing = False

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh stale lists in the background until cancelled."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._nursery = None

    def stop(self) -> None:
        """End :meth:`run` (and a refresh it runs)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
