"""The app's shared state, and the small request helpers every route uses."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from quart import current_app, request

from jarvis_trio.api.exchange import exit_callbacks
from jarvis_trio.auth import Authenticator
from jarvis_trio.config import Settings
from jarvis_trio.generation import Backend
from jarvis_trio.metrics import Metrics
from jarvis_trio.schemas import check_id
from jarvis_trio.sessions import SessionManager


@dataclass
class JarvisState:
    settings: Settings
    backend: Backend
    manager: SessionManager
    auth: Authenticator
    metrics: Metrics


def state() -> JarvisState:
    value: JarvisState = current_app.extensions["jarvis"]
    return value


def header_id(name: str) -> str | None:
    """An id header (``X-Session-Id``, ``X-Request-Id``), checked; ``None`` if absent."""
    value = request.headers.get(name)
    return None if value is None else check_id(value, name, code="invalid_header")


def on_exit(callback: Callable[[], None]) -> None:
    """Run ``callback`` when this request's exchange is over, however it ends."""
    exit_callbacks(request.scope).append(callback)
