"""The HTTP edge: a quart-trio app that validates, authenticates and renders.

Every rule about streams lives in :mod:`jarvis_trio.rules` and is carried out
by :mod:`jarvis_trio.sessions`; the edge only translates HTTP to those calls
and their results back to OpenAI's (or Ollama's) wire format. Routes live in
blueprints, one module each: :mod:`~jarvis_trio.api.chat` (chat and models),
:mod:`~jarvis_trio.api.sessions_api` (Stop, viewers, requests),
:mod:`~jarvis_trio.api.ops` (the page, health, metrics) and
:mod:`jarvis_trio.api.ollama` (Ollama's API).
"""

from __future__ import annotations

import os

import trio
from quart_trio import QuartTrio

from jarvis_trio import logs
from jarvis_trio.agent import AgentBackend
from jarvis_trio.api import chat, ops, sessions_api
from jarvis_trio.api.exchange import ExchangeLifetime
from jarvis_trio.api.hooks import register_hooks
from jarvis_trio.api.ollama import routes as ollama
from jarvis_trio.api.state import JarvisState
from jarvis_trio.auth import Authenticator
from jarvis_trio.backends import choose_backend
from jarvis_trio.backends.upstream import UpstreamBackend
from jarvis_trio.config import Settings
from jarvis_trio.cors import Cors
from jarvis_trio.generation import Backend
from jarvis_trio.metrics import Metrics
from jarvis_trio.registry import Registry
from jarvis_trio.sessions import SessionManager
from jarvis_trio.tools.lifetime import install_tool_host, tool_host_from


def create_app(settings: Settings, backend: Backend | None = None) -> QuartTrio:
    app = QuartTrio("jarvis_trio", static_folder=None)  # /static/ is the page's allow-list
    app.config.update(
        # quart-trio applies RESPONSE_TIMEOUT as a move_on_after around the whole
        # response: a stream longer than 60 s would be silently cut. Never.
        RESPONSE_TIMEOUT=None,
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        BODY_TIMEOUT=settings.body_timeout,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    limiter = trio.CapacityLimiter(settings.reader_threads)
    backend = backend or choose_backend(settings, limiter)
    metrics = Metrics()
    # JARVIS_MCP_CONFIG's servers, for the app's lifetime; with them, agent mode.
    tools = tool_host_from(settings, metrics)
    if tools is not None:
        backend = AgentBackend(backend, tools, max_steps=settings.agent_max_steps)
    registry = _registry_from(settings)
    manager = SessionManager(
        backend,
        join_budget=settings.join_budget,
        inactivity_seconds=settings.stream_inactivity_seconds,
        first_token_seconds=settings.first_token_timeout,
        replay_chars=settings.replay_buffer_chars,
        replay_retention=settings.replay_retention_seconds,
        replay_retained=settings.replay_retained_streams,
        observer=metrics,
        registry=registry,
        max_streams=settings.max_streams,
        retry_after=settings.retry_after_seconds,
    )
    upstream = backend.inner if isinstance(backend, AgentBackend) else backend
    kept = upstream.idle_connections if isinstance(upstream, UpstreamBackend) else lambda: 0
    metrics.watch(manager.statistics, limiter, kept)
    app.extensions["jarvis"] = JarvisState(
        settings=settings,
        backend=backend,
        manager=manager,
        auth=Authenticator(settings.api_keys, allow_unauthenticated=settings.allow_unauthenticated),
        metrics=metrics,
    )
    app.asgi_app = ExchangeLifetime(app.asgi_app)  # type: ignore[method-assign]
    app.asgi_app = Cors(app.asgi_app, settings.cors_origins)  # type: ignore[method-assign]

    @app.before_serving
    async def start_sessions() -> None:
        await app.nursery.start(manager.run)
        if isinstance(upstream, UpstreamBackend):
            # The model list of requests that name no model, refreshed off their path;
            # kept-alive upstream connections closed when they expire.
            await app.nursery.start(upstream.run)
        logs.event(
            "server_ready",
            backend=backend.name,
            thread_limit=settings.reader_threads,
            max_streams=settings.max_streams,
        )

    @app.after_serving
    async def stop_sessions() -> None:
        if isinstance(upstream, UpstreamBackend):
            upstream.stop()
        await manager.shutdown()
        if manager.stopped:
            await backend.aclose()
        if registry is not None:
            await registry.aclose()
        # else: a worker thread is still running (one stuck in connect() is freed only
        # by the connect timeout); closing its client under it would not help.

    if tools is not None:
        install_tool_host(app, tools)  # after the manager's: streams end before the tools
    register_hooks(app)
    for blueprint in (ops.blueprint, chat.blueprint, sessions_api.blueprint, ollama.blueprint):
        app.register_blueprint(blueprint)
    return app


def _registry_from(settings: Settings) -> Registry | None:
    if settings.registry_url is None:
        return None
    from jarvis_trio.registry.redis import RedisRegistry

    return RedisRegistry(
        settings.registry_url,
        lease_seconds=settings.registry_lease_seconds,
        timeout=settings.registry_timeout,
        worker=str(os.getpid()),
        secret=settings.registry_secret,
    )
