"""Model backends behind one interface (:mod:`jarvis_trio.backends.base`)."""

from __future__ import annotations

import trio

from jarvis_trio.backends.base import Backend
from jarvis_trio.backends.sim import SimBackend
from jarvis_trio.config import Settings


def make_backend(settings: Settings, limiter: trio.CapacityLimiter) -> Backend:
    if settings.backend == "sim":
        return SimBackend(tokens_per_second=settings.sim_tokens_per_second, limiter=limiter)
    raise ValueError(f"unknown backend {settings.backend!r}")
