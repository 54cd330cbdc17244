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

A refusal that will pass (a full gateway, a restart) also says when to try
again: ``Retry-After`` (whole seconds) and ``retry-after-ms``.

Every error response also says ``x-should-retry: true|false``, which the
official OpenAI SDKs obey over their own rule (retry 408, 409, 429 and >= 500,
twice by default). Retrying is right where waiting may help (a full gateway, a
restart, an unreachable upstream); it is wrong where it would undo what the
user did or run a long generation again for nothing: a 409 (superseded,
stopped: a retry would restart the stream the user ended), a 500 (our bug), an
upstream that sent garbage, and a model that stayed silent past its timeout.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Codes whose class would allow a retry but which a retry only makes worse.
_NO_RETRY_CODES = frozenset({"upstream_malformed", "first_token_timeout", "inactivity_timeout"})


class ApiError(Exception):
    status: int = 500
    type: str = "server_error"
    # May a client retry the same request automatically? (``x-should-retry``)
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        # Seconds after which a retry may succeed (``Retry-After``), when we know.
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, code=self.code, param=self.param)

    @property
    def should_retry(self) -> bool:
        return self.retryable and self.code not in _NO_RETRY_CODES

    def headers(self) -> dict[str, str]:
        headers = {"x-should-retry": "true" if self.should_retry else "false"}
        if self.retry_after is not None:
            # HTTP's header counts whole seconds; OpenAI's SDKs read the finer one first.
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
            headers["retry-after-ms"] = str(max(1, round(self.retry_after * 1000)))
        return headers


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
    retryable = True


class ServerError(ApiError):
    status = 500
    type = "server_error"


class UpstreamError(ApiError):
    status = 502
    type = "upstream_error"
    retryable = True


class ServiceUnavailable(ApiError):
    status = 503
    type = "service_unavailable"
    retryable = True


class RegistryUnavailable(ServiceUnavailable):
    """The session registry (Redis) did not answer within its timeout."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="registry_unavailable")


class UpstreamTimeout(ApiError):
    status = 504
    type = "timeout"
    retryable = True


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
        refused = UpstreamError(
            f"The model server at {url} refused our credentials: {message}",
            code="upstream_auth",
        )
        refused.retryable = False  # the same credentials are refused again
        return refused
    if status == 429:
        return TooManyRequests(
            f"The model server at {url} is busy (HTTP 429): {message}", code="upstream_busy"
        )
    if status == 408:
        return UpstreamTimeout(
            f"The model server at {url} timed out (HTTP 408): {message}", code="upstream_timeout"
        )
    if 400 <= status < 500:
        return InvalidRequest(f"The model server refused the request: {message}")
    return UpstreamError(f"The model server at {url} failed (HTTP {status}): {message}")


def error_body(
    message: str, type_: str, *, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
