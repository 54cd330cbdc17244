"""Fixtures that start the real server: hypercorn's trio worker on 127.0.0.1:0."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from quart_trio import QuartTrio

from jarvis_trio.api import JarvisState, create_app
from jarvis_trio.config import Settings
from jarvis_trio.generation import Backend
from jarvis_trio.server import serve
from jarvis_trio.sessions import SessionManager

TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The marks a test's directory implies: everything in tests/browser/ drives Chromium.
    (``redis`` and ``slow`` are set by the tests themselves.)"""
    for item in items:
        if item.path.is_relative_to(TESTS / "browser"):
            item.add_marker(pytest.mark.browser)


@dataclass
class RunningServer:
    url: str
    app: QuartTrio

    @property
    def state(self) -> JarvisState:
        state: JarvisState = self.app.extensions["jarvis"]
        return state

    @property
    def manager(self) -> SessionManager:
        return self.state.manager

    def client(self, **kwargs: Any) -> httpx.AsyncClient:
        kwargs.setdefault("timeout", 10.0)
        return httpx.AsyncClient(base_url=self.url, **kwargs)


StartServer = Callable[..., Awaitable[RunningServer]]


@pytest.fixture
def start_server(nursery: trio.Nursery) -> StartServer:
    """Start a server; keyword arguments are Settings fields (the sim is fast by default)."""

    async def start(backend: Backend | None = None, **overrides: Any) -> RunningServer:
        overrides.setdefault("sim_tokens_per_second", 200.0)
        overrides.setdefault("backend", "sim")
        app = create_app(Settings(**overrides), backend)
        binds: list[str] = await nursery.start(
            partial(serve, app, "127.0.0.1", 0, shutdown_trigger=trio.Event(), handle_signals=False)
        )
        return RunningServer(binds[0], app)

    return start


@pytest.fixture
async def server(start_server: StartServer) -> RunningServer:
    return await start_server()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with server.client() as c:
        yield c


@pytest.fixture(autouse=True)
def _event_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="jarvis_trio")


def log_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Our events as ``name key=value ...`` strings, in order."""
    out = []
    for record in caplog.records:
        if record.name == "jarvis_trio" and hasattr(record, "jarvis_event"):
            pairs = getattr(record, "jarvis_fields", {}).items()
            fields = " ".join(f"{k}={v}" for k, v in pairs)
            out.append(f"{record.__dict__['jarvis_event']} {fields}".strip())
    return out
