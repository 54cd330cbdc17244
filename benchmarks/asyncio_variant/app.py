"""The HTTP edge: a FastAPI app with our API, headers and wire format.

Routes: ``POST /v1/chat/completions`` (SSE or JSON), ``GET /v1/models``,
``GET /healthz`` and Stop, ``POST /v1/sessions/{session_id}/cancel``. Request
parsing, chunks, bodies, endings and errors are ours
(:func:`jarvis_trio.schemas.parse_chat_request`, :mod:`jarvis_trio.wire`,
:mod:`jarvis_trio.outcomes`, :mod:`jarvis_trio.errors`), so a client sees the
same bytes from both variants. Headers: ``X-Stream-Id`` (the chunk ``id``),
``X-Session-Id`` (echoed), ``X-Request-Id`` (echoed or new).

Where the notes' design makes it differ from ours:

* ``StreamingResponse`` sends ``200`` and the headers before the body runs, and
  the body is where the stream registers and reads. So an upstream failure
  before the first token (Ollama's 404 for an unknown model, a refused
  connection) is an error event in a 200 stream, not a plain HTTP error; and a
  stream sends its role chunk before it has waited for the previous one.
* Client disconnect is what Starlette and uvicorn do on their own: uvicorn's
  h11 protocol speaks ASGI 2.3, so Starlette runs the body next to a task
  waiting for ``http.disconnect`` and cancels the body (anyio cancel scope) when
  it comes. The stream's ``finally`` runs; no flag is set, so the reader thread
  reads on. A non-streaming request is not cancelled at all: it runs to the
  end and its answer is dropped.
* No auth, no ``GET /v1/requests``, no ``/metrics``, no body-size limit: the
  server only listens on loopback.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from benchmarks.asyncio_variant.agent import agent_unavailable
from benchmarks.asyncio_variant.backends import ThreadBackend
from benchmarks.asyncio_variant.registry import StreamRegistry
from benchmarks.asyncio_variant.streams import StreamRun
from benchmarks.asyncio_variant.tools import ToolHost, open_tool_host
from jarvis_trio import logs
from jarvis_trio.auth import ANONYMOUS
from jarvis_trio.errors import ApiError, InvalidRequest, MethodNotAllowed, NotFound, ServerError
from jarvis_trio.outcomes import Ending
from jarvis_trio.schemas import ID_PATTERN, check_id, parse_chat_request
from jarvis_trio.wire import ChunkFormat, completion_for, stream_ending


def create_app(
    backend: ThreadBackend,
    *,
    registry: StreamRegistry | None = None,
    inactivity_seconds: float = 120.0,
    mcp_config: str | None = None,
) -> ASGIApp:
    """With ``mcp_config``, the MCP servers start in the app's lifespan (serve it
    with lifespan on) and ``"jarvis": {"agent": true}`` requests may use their tools."""
    registry = registry or StreamRegistry()
    tools: list[ToolHost] = []  # the host, once the lifespan has started it

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if mcp_config is None:
            yield
            return
        async with open_tool_host(mcp_config) as host:
            tools.append(host)
            yield

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, lifespan=lifespan)
    _register_error_handlers(app)

    @app.get("/healthz")
    async def healthz() -> Response:
        stats = registry.statistics()
        return JSONResponse(
            {
                "status": "ok",
                "backend": backend.name,
                "sessions": stats.sessions,
                "live_streams": stats.live_streams,
            }
        )

    @app.get("/v1/models")
    async def models() -> Response:
        listed = await backend.list_models()
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by}
                    for m in listed
                ],
            }
        )

    @app.post("/v1/sessions/{session_id}/cancel")
    async def cancel_session(session_id: str) -> Response:
        check_id(session_id, "session_id")
        report = await registry.stop(session_id)
        return JSONResponse(
            {
                "object": "session.cancel",
                "session_id": session_id,
                "result": report.result,
                "stream_id": report.stream_id,
                "waited_ms": round(report.waited_ms, 3),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        chat = parse_chat_request(await request.body())
        model = await backend.resolve_model(chat.model)
        session_id = _header_id(request, "X-Session-Id")
        # As ours: the upstream trace header says owner/session (no keys: anonymous).
        trace = f"{ANONYMOUS}/{session_id}" if session_id is not None else None
        agent = chat.wants_agent(False)
        if agent and not tools:
            raise agent_unavailable()
        run = StreamRun(
            registry=registry,
            backend=backend,
            job=chat.to_generation(model, trace_session=trace, agent=agent),
            session_id=session_id,
            request_id=request.state.request_id,
            inactivity_seconds=inactivity_seconds,
            tools=tools[0] if agent else None,
        )
        headers = {"X-Stream-Id": run.id}
        if session_id is not None:
            headers["X-Session-Id"] = session_id
        fmt = ChunkFormat(run.id, model, run.created, chat.include_usage)
        if not chat.stream:
            text, ending = await run.collect()
            body = completion_for(
                stream_id=run.id, model=model, created=run.created, pieces=[text], ending=ending
            )
            return JSONResponse(body, headers=headers)
        return StreamingResponse(
            _sse_body(run, fmt),
            media_type="text/event-stream; charset=utf-8",
            headers={**headers, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return RequestIdMiddleware(app)


async def _sse_body(run: StreamRun, fmt: ChunkFormat) -> AsyncIterator[str]:
    yield fmt.role()
    async for item in run.events():
        if isinstance(item, Ending):
            yield stream_ending(fmt, item)
        else:
            yield fmt.content(item)


def _header_id(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return None if value is None else check_id(value, name, code="invalid_header")


def _error_response(error: ApiError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


def _register_error_handlers(app: FastAPI) -> None:
    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _error_response(exc)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        mapped: ApiError
        if exc.status_code == 404:
            path = request.url.path
            mapped = NotFound(f"No route for {request.method} {path}.", code="not_found")
        elif exc.status_code == 405:
            mapped = MethodNotAllowed(
                f"{request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        else:
            mapped = InvalidRequest(str(exc.detail), code="http_error")
            mapped.status = exc.status_code
        return _error_response(mapped)

    async def unexpected(request: Request, exc: Exception) -> Response:
        logs.log.exception("request_failed path=%s", request.url.path, exc_info=exc)
        return _error_response(ServerError("Internal server error.", code="internal_error"))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)


class RequestIdMiddleware:
    """``X-Request-Id`` on every response: the client's (if valid) or a new one.

    A plain ASGI middleware (not ``@app.middleware``, whose ``BaseHTTPMiddleware``
    would run the app in a task of its own and change what gets cancelled).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), None)
        text = given.decode("latin-1") if given is not None else None
        request_id = "req-" + secrets.token_hex(8)
        if text is not None and ID_PATTERN.fullmatch(text):
            request_id = text
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_tagged(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), header]}
            await send(message)

        if text is not None and request_id != text:
            error = InvalidRequest(
                "X-Request-Id must be 1-128 characters of A-Z a-z 0-9 . _ ~ : @ + = -",
                param="X-Request-Id",
                code="invalid_header",
            )
            await _error_response(error)(scope, receive, send_tagged)
            return
        await self.app(scope, receive, send_tagged)
