"""What runs around every request: ids, the owner, and errors in OpenAI's (or Ollama's) shape."""

from __future__ import annotations

import secrets

from quart import Response, g, jsonify, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from jarvis_trio import logs
from jarvis_trio.api.ollama import ndjson
from jarvis_trio.api.state import header_id, state
from jarvis_trio.errors import (
    ApiError,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServerError,
)


def register_hooks(app: QuartTrio) -> None:
    @app.before_request
    async def identify() -> None:
        g.request_id = header_id("X-Request-Id") or "req-" + secrets.token_hex(8)
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
        response = jsonify(ndjson.error_body(error) if ollama else error.body())
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
