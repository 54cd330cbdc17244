"""The HTTP edge: a quart-trio app that validates, authenticates and renders.

Every rule about streams lives in :mod:`jarvis_trio.rules` and is carried out
by :mod:`jarvis_trio.sessions`; this module only translates HTTP to those
calls and their results back to OpenAI's wire format.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import trio
from hypercorn.typing import ASGIFramework, ASGIReceiveCallable, ASGISendCallable, Scope
from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from jarvis_trio import logs, web
from jarvis_trio.agent import AgentBackend, agent_unavailable
from jarvis_trio.auth import Authenticator
from jarvis_trio.backends import choose_backend
from jarvis_trio.backends.upstream import UpstreamBackend
from jarvis_trio.config import Settings
from jarvis_trio.cors import Cors
from jarvis_trio.errors import (
    ApiError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
    TooManyRequests,
)
from jarvis_trio.generation import Backend, GenerationRequest, ModelInfo
from jarvis_trio.metrics import CONTENT_TYPE, Metrics
from jarvis_trio.registry import Registry
from jarvis_trio.replay import MAX_VIEWERS, REPLAY_BATCH, ReplayLog, parse_last_event_id
from jarvis_trio.schemas import check_id, parse_chat_request, parse_resume_seconds
from jarvis_trio.sessions import SessionManager
from jarvis_trio.streams import Stream
from jarvis_trio.tools.lifetime import install_tool_host, tool_host_from
from jarvis_trio.wire import DONE, ChunkFormat, completion_for, sse, stream_ending

EXIT_CALLBACKS = "jarvis.on_exit"


@dataclass
class JarvisState:
    settings: Settings
    backend: Backend
    manager: SessionManager
    auth: Authenticator
    metrics: Metrics


def state() -> JarvisState:
    from quart import current_app

    value: JarvisState = current_app.extensions["jarvis"]
    return value


def _exit_callbacks(scope: Scope) -> list[Callable[[], None]]:
    callbacks: list[Callable[[], None]] = cast(dict[str, Any], scope)[EXIT_CALLBACKS]
    return callbacks


class ExchangeLifetime:
    """ASGI middleware for the three things an HTTP exchange must never leave behind.

    1. Nothing started for the exchange outlives it. Quart awaits
       ``http.response.start`` before it enters a streaming body, so a client
       that leaves at that moment never runs the body's ``finally``; the
       exchange itself always ends, so its callbacks run here.
    2. A connection is never left with unread request body. When we answer
       before reading a body (an auth error, a 404, a 413), hypercorn's
       per-request queue fills and the client's next request on that kept-alive
       connection hangs (docs/explanation/measurements.md). Such a response says
       ``Connection: close``.
    3. The connection outlives the exchange as hypercorn means it to: closed after a
       ``Connection: close`` answer, its idle timer restarted when kept alive.
       hypercorn's trio worker does both from *inside* the app's final send, after
       posting ``http.disconnect`` to the app; quart-trio cancels the request's
       nursery the moment its reader sees that disconnect, so the rest of the send
       is cancelled at its next checkpoint (``send_eof`` before the close, the idle
       timer's lock) and the socket stays open for good. A disconnect that arrives
       during the final send is therefore held back until that send has returned.
       Upstream (hypercorn 0.18 protocol/h11.py ``_maybe_recycle``, quart-trio 0.12
       asgi.py ``handle_messages``); the same symptom, cause not named there:
       https://github.com/pgjones/hypercorn/issues/330. docs/howto/hypercorn.md has more.
    """

    def __init__(self, app: ASGIFramework) -> None:
        self.app = app

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        callbacks: list[Callable[[], None]] = []
        cast(dict[str, Any], scope)[EXIT_CALLBACKS] = callbacks
        body_done = not _declares_body(scope["headers"])
        final_send_done: trio.Event | None = None

        async def receive_tracked() -> Any:
            nonlocal body_done
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done = True
            if message["type"] == "http.disconnect" and final_send_done is not None:
                await final_send_done.wait()  # (3): let hypercorn finish with the socket
            return message

        async def send_tracked(message: Any) -> None:
            nonlocal final_send_done
            if message["type"] == "http.response.start" and not body_done:
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            if message["type"] != "http.response.body" or message.get("more_body", False):
                await send(message)
                return
            final_send_done = trio.Event()
            try:
                await send(message)
            finally:
                final_send_done.set()

        try:
            await self.app(scope, receive_tracked, send_tracked)
        finally:
            for callback in callbacks:
                callback()


def _declares_body(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return value.strip() not in (b"", b"0")
        if lowered == b"transfer-encoding":
            return True
    return False


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
        backend = AgentBackend(
            backend,
            tools,
            max_steps=settings.agent_max_steps,
            cancel_timeout=settings.agent_cancel_timeout,
        )
    registry = _registry_from(settings)
    manager = SessionManager(
        backend,
        join_budget=settings.prev_stream_timeout,
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
    metrics.watch(manager.statistics, limiter)
    app.extensions["jarvis"] = JarvisState(
        settings=settings,
        backend=backend,
        manager=manager,
        auth=Authenticator(settings.api_keys, allow_unauthenticated=settings.allow_unauthenticated),
        metrics=metrics,
    )
    app.asgi_app = ExchangeLifetime(app.asgi_app)  # type: ignore[method-assign]
    app.asgi_app = Cors(app.asgi_app, settings.cors_origins)  # type: ignore[method-assign]

    upstream = backend.inner if isinstance(backend, AgentBackend) else backend

    @app.before_serving
    async def start_sessions() -> None:
        await app.nursery.start(manager.run)
        if isinstance(upstream, UpstreamBackend):
            # Refreshes the model list of requests that name no model, off their path.
            await app.nursery.start(upstream.models.run)
        logs.event(
            "server_ready",
            backend=backend.name,
            thread_limit=settings.reader_threads,
            max_streams=settings.max_streams,
        )

    @app.after_serving
    async def stop_sessions() -> None:
        if isinstance(upstream, UpstreamBackend):
            upstream.models.stop()
        await manager.shutdown()
        if manager.stopped:
            await backend.aclose()
        if registry is not None:
            await registry.aclose()
        # else: a worker thread is still running (one stuck in connect() is freed only
        # by the connect timeout); closing its client under it would not help.

    if tools is not None:
        install_tool_host(app, tools)  # after the manager's: streams end before the tools
    _register_hooks(app)
    _register_routes(app)
    from jarvis_trio.ollama_api.routes import blueprint  # imports admit() from here

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


def _header_id(name: str) -> str | None:
    value = request.headers.get(name)
    return None if value is None else check_id(value, name, code="invalid_header")


def _register_hooks(app: QuartTrio) -> None:
    @app.before_request
    async def identify() -> None:
        g.request_id = _header_id("X-Request-Id") or "req-" + secrets.token_hex(8)
        if request.path.startswith(("/v1/", "/api/")) or request.path == "/metrics":
            server = request.scope.get("server")
            client = request.scope.get("client")
            g.owner = state().auth.owner(
                request.headers.get("Authorization"),
                server_host=server[0] if server else None,
                client_host=client[0] if client else None,
            )

    @app.after_request
    async def tag(response: Response) -> Response:
        response.headers["X-Request-Id"] = g.get("request_id") or "req-" + secrets.token_hex(8)
        registry = state().manager.registry
        if registry is not None:
            # Which process answered: with several workers, the logs' worker=<pid>.
            response.headers["X-Jarvis-Worker"] = registry.worker
        state().metrics.requests.labels(str(response.status_code)).inc()
        return response

    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        # Ollama's routes answer errors in Ollama's shape: {"error": "<message>"}.
        ollama = request.path.startswith("/api/")
        response = jsonify({"error": error.message} if ollama else error.body())
        response.status_code = error.status
        response.headers.update(error.headers())
        return response

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = error.code or 500
        mapped: ApiError
        if code == 404:
            mapped = NotFound(f"No route for {request.method} {request.path}.", code="not_found")
        elif code == 405:
            mapped = MethodNotAllowed(
                f"{request.method} is not allowed on {request.path}.", code="method_not_allowed"
            )
        elif code == 413:
            mapped = PayloadTooLarge(
                f"The request body is larger than {state().settings.max_body_bytes} bytes.",
                code="body_too_large",
            )
        else:
            slug = error.name.lower().replace(" ", "_")
            mapped = InvalidRequest(error.description or error.name, code=slug)
            mapped.status = code
        return await api_error(mapped)

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        logs.log.exception("request_failed path=%s", request.path)
        return await api_error(ServerError("Internal server error.", code="internal_error"))


def _on_exit(callback: Callable[[], None]) -> None:
    _exit_callbacks(request.scope).append(callback)


_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_TYPE = "text/event-stream; charset=utf-8"


def _register_routes(app: QuartTrio) -> None:
    @app.get("/")
    async def chat_page() -> Response:
        return _page_response("index.html")

    @app.get("/static/<path:name>")
    async def page_asset(name: str) -> Response:
        return _page_response(name)

    @app.get("/healthz")
    async def healthz() -> Response:
        st = state()
        stats = st.manager.statistics()
        return jsonify(
            status="ok",
            backend=st.backend.name,
            sessions=stats.sessions,
            live_streams=stats.live_streams,
            running_streams=stats.running_streams,
            max_streams=stats.max_streams,
            waiting_streams=stats.waiting_streams,
            refused=stats.refused,
        )

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state().metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> Response:
        listed = await state().backend.list_models()
        return jsonify(object="list", data=[_model_object(m) for m in listed])

    @app.get("/v1/models/<path:model_id>")
    async def model(model_id: str) -> Response:
        for listed in await state().backend.list_models():
            if listed.id == model_id:
                return jsonify(_model_object(listed))
        raise NotFound(
            f"The model {model_id!r} does not exist.", param="model", code="model_not_found"
        )

    @app.post("/v1/sessions/<session_id>/cancel")
    async def cancel_session(session_id: str) -> Response:
        check_id(session_id, "session_id")
        report = await state().manager.stop(g.owner, session_id)
        return jsonify(
            object="session.cancel",
            session_id=session_id,
            result=report.result,
            stream_id=report.stream_id,
            waited_ms=round(report.waited_ms, 3),
        )

    @app.get("/v1/sessions/<session_id>/stream")
    async def watch_session(session_id: str) -> Response:
        check_id(session_id, "session_id")
        log = state().manager.watch(g.owner, session_id)
        if log is None:
            raise NotFound(
                f"Session {session_id!r} has no stream to watch.",
                param="session_id",
                code="no_stream",
            )
        headers = {**_SSE_HEADERS, "X-Stream-Id": log.stream_id, "X-Session-Id": session_id}
        if log.request_id is not None:
            headers["X-Stream-Request-Id"] = log.request_id
        if request.method == "HEAD":  # Quart would run the body and hold a viewer's place
            return Response("", content_type=_SSE_TYPE, headers=headers)
        if log.viewers >= MAX_VIEWERS:
            raise TooManyRequests(
                f"Stream {log.stream_id} has {MAX_VIEWERS} viewers already.",
                code="too_many_viewers",
            )
        after = parse_last_event_id(request.headers.get("Last-Event-ID"), log.stream_id)
        if after and log.after(after, limit=0).truncated:
            after = 0  # the pieces after the client's last one are gone: replay what is kept
        # Counted for the whole exchange (the exit callback runs however it ends), so a
        # client that leaves before the body starts is not left counted.
        log.viewer_joined()
        _on_exit(log.viewer_left)
        logs.event("viewer_attached", trace=log.stream_id, after=after)
        response = Response(
            _viewer_body(log, after, state().settings.extended_finish_reasons),
            content_type=_SSE_TYPE,
            headers=headers,
        )
        response.timeout = None
        return response

    @app.get("/v1/requests")
    async def list_requests() -> Response:
        listed = state().manager.requests_of(g.owner)
        return jsonify(
            object="list",
            data=[
                {
                    "id": r.id,
                    "object": "request",
                    "session_id": r.session_id,
                    "request_id": r.request_id,
                    "model": r.model,
                    "state": r.state,
                    "age_seconds": round(r.age_seconds, 3),
                    "tokens": r.tokens,
                }
                for r in listed
            ],
        )

    @app.post("/v1/requests/<stream_id>/cancel")
    async def cancel_request(stream_id: str) -> Response:
        check_id(stream_id, "stream_id")
        report = await state().manager.cancel_request(g.owner, stream_id)
        return jsonify(
            object="request.cancel",
            id=stream_id,
            result=report.result,
            waited_ms=round(report.waited_ms, 3),
        )

    @app.post("/v1/chat/completions")
    async def chat_completions() -> Response:
        st = state()
        chat = parse_chat_request(
            await request.get_data(cache=False, as_text=False, parse_form_data=False)
        )
        refuse_if_full()
        model = await st.backend.resolve_model(chat.model or None)
        agent = chat.wants_agent(st.settings.agent_default)
        if agent and not isinstance(st.backend, AgentBackend):
            raise agent_unavailable()
        stream, headers = await admit(
            chat.to_generation(model, agent=agent), streaming=bool(chat.stream)
        )
        answered = stream.answered_model or model
        fmt = ChunkFormat(
            stream.id,
            answered,
            stream.created,
            chat.include_usage,
            extended_finish_reasons=st.settings.extended_finish_reasons,
        )
        if not chat.stream:
            pieces, ending = await stream.collect_output()
            body = completion_for(
                stream_id=stream.id,
                model=stream.answered_model or answered,
                created=stream.created,
                pieces=pieces,
                ending=ending,
            )
            response = jsonify(body)
        else:
            early = stream.ending
            if early is not None and early.error is not None and stream.tokens == 0:
                raise early.error  # failed before any output: a plain HTTP error
            response = Response(
                _sse_body(stream, fmt), content_type=_SSE_TYPE, headers=dict(_SSE_HEADERS)
            )
            response.timeout = None
        response.headers.update(headers)
        return response


def refuse_if_full() -> None:
    """A full (or closing) gateway says so at once (429, 503), before anything upstream."""
    state().manager.check_accepting(g.owner, _header_id("X-Session-Id"))


async def admit(job: GenerationRequest, *, streaming: bool) -> tuple[Stream, dict[str, str]]:
    """Submit ``job`` to its session and wait until its answer may be read.

    The one way every generation route (``/v1/chat/completions``, Ollama's
    ``/api/chat`` and ``/api/generate``) starts a stream: the backend's check (a
    request refused there supersedes nothing), ``X-Session-Id`` and
    ``X-Jarvis-Resume-Seconds``, the session manager's admission (its claim across
    processes, the session's rules), and the exit callback that abandons the stream
    however the exchange ends. Returns the stream and the headers that name it.
    """
    st = state()
    st.backend.check_request(job)  # a request refused here supersedes nothing
    session_id = _header_id("X-Session-Id")
    resume = parse_resume_seconds(
        request.headers.get("X-Jarvis-Resume-Seconds"), st.settings.max_resume_seconds
    )
    if resume and (session_id is None or not streaming):
        raise InvalidRequest(
            "X-Jarvis-Resume-Seconds needs a streaming request with an X-Session-Id "
            "(viewers attach by session).",
            param="X-Jarvis-Resume-Seconds",
            code="invalid_header",
        )
    stream = await st.manager.admit(g.owner, session_id, job, g.request_id, resume_seconds=resume)
    _on_exit(lambda: st.manager.abandon(stream))
    await st.manager.wait_turn(stream)
    await stream.wait_ready()
    headers = {"X-Stream-Id": stream.id}
    if session_id is not None:
        headers["X-Session-Id"] = session_id
    return stream, headers


async def _sse_body(stream: Stream, fmt: ChunkFormat) -> AsyncIterator[str]:
    yield fmt.role()
    # Pieces leave the channel in the order they entered the replay log, so the
    # n-th piece here is the log's n-th: a viewer resumes after ``<id>:<n>``.
    seq = 0
    async for batch in stream.batches():
        parts = []
        for piece in batch:
            seq += 1
            parts.append(fmt.piece(piece, seq))
        yield "".join(parts)
    yield stream_ending(fmt, stream.final_ending(), stream.tokens)


async def _viewer_body(log: ReplayLog, after: int, extended: bool = False) -> AsyncIterator[str]:
    """A viewer's copy of a stream: what was sent after ``after``, then the rest live.

    Reads the log only: it never touches the stream, its session or its rules. A
    viewer that falls so far behind that the bound dropped pieces it had not read
    gets an error event (``viewer_fell_behind``) instead of a silent gap.
    """
    fmt = ChunkFormat(log.stream_id, log.model, log.created, extended_finish_reasons=extended)
    cursor = after
    if after == 0:
        truncated = log.after(0, limit=0).truncated
        yield fmt.role(jarvis={"viewer": True, "replay_truncated": truncated})
    while True:
        changed = log.changed()
        replay = log.after(cursor, limit=REPLAY_BATCH)
        if replay.truncated and cursor > 0:
            message = "This viewer fell behind the replay buffer; attach again to catch up."
            yield sse(TooManyRequests(message, code="viewer_fell_behind").body()) + DONE
            return
        if replay.pieces:
            cursor = replay.last
            yield "".join(
                fmt.piece(piece, replay.first + i) for i, piece in enumerate(replay.pieces)
            )
        elif log.ending is not None:
            break
        else:
            await changed.wait()
    yield stream_ending(fmt, log.ending, log.count)


def _model_object(model: ModelInfo) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": model.created, "owned_by": model.owned_by}


def _page_response(name: str) -> Response:
    asset = web.asset(name)
    if asset is None:
        raise NotFound(f"No route for GET {request.path}.", code="not_found")
    body, content_type = asset
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = web.CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
