"""Every error a client can see, and its OpenAI-style body, in one place.

::

    ApiError                      status  type
     ├── InvalidRequest            400     invalid_request_error
     ├── AuthenticationFailed      401     authentication_error
     ├── Forbidden                 403     permission_error
     ├── NotFound                  404     not_found_error
     ├── MethodNotAllowed          405     invalid_request_error
     ├── StreamEnded               409     superseded / stopped / disconnected
     ├── PayloadTooLarge           413     invalid_request_error
     ├── TooManyRequests           429     rate_limit_error
     ├── ServerError               500     server_error
     ├── UpstreamError             502     upstream_error
     ├── ServiceUnavailable        503     service_unavailable
     │    └── RegistryUnavailable  503     service_unavailable (code registry_unavailable)
     └── UpstreamTimeout           504     timeout

The body is always ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
from typing import Any


class ApiError(Exception):
    status: int = 500
    type: str = "server_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, code=self.code, param=self.param)


class InvalidRequest(ApiError):
    status = 400
    type = "invalid_request_error"


class AuthenticationFailed(ApiError):
    status = 401
    type = "authentication_error"


class Forbidden(ApiError):
    status = 403
    type = "permission_error"


class NotFound(ApiError):
    status = 404
    type = "not_found_error"


class MethodNotAllowed(ApiError):
    status = 405
    type = "invalid_request_error"


class StreamEnded(ApiError):
    """A non-streaming request whose stream was cancelled before it completed."""

    status = 409

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, code=reason)
        self.reason = reason

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.reason, code=self.reason)


class PayloadTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"


class TooManyRequests(ApiError):
    status = 429
    type = "rate_limit_error"


class ServerError(ApiError):
    status = 500
    type = "server_error"


class UpstreamError(ApiError):
    status = 502
    type = "upstream_error"


class ServiceUnavailable(ApiError):
    status = 503
    type = "service_unavailable"


class RegistryUnavailable(ServiceUnavailable):
    """The session registry (Redis) did not answer within its timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="registry_unavailable")


class UpstreamTimeout(ApiError):
    status = 504
    type = "timeout"


def upstream_error_message(body: str) -> str:
    """The message in an upstream's error body, whatever its shape, else the body's start.

    Ollama says ``{"error": "..."}``; OpenAI-compatible servers say
    ``{"error": {"message": "..."}}``.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return body.strip()[:500]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:500]
    if isinstance(error, str):
        return error[:500]
    return body.strip()[:500]


def upstream_status_error(status: int, message: str, *, model: str, url: str) -> ApiError:
    """What a failed upstream response means for our client, whatever the protocol."""
    message = message or f"HTTP {status}"
    if status == 404:
        return NotFound(
            f"The model {model!r} is not available at {url}: {message}",
            param="model",
            code="model_not_found",
        )
    if status in (401, 403):
        return UpstreamError(f"The model server at {url} refused our credentials: {message}")
    if 400 <= status < 500:
        return InvalidRequest(f"The model server refused the request: {message}")
    return UpstreamError(f"The model server at {url} failed (HTTP {status}): {message}")


def error_body(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
