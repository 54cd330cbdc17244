"""CORS for browser clients on other origins: ``JARVIS_CORS_ORIGINS``.

ASGI middleware around the app; with no origins configured it does nothing. For a
request whose ``Origin`` is allowed:

- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered
  here, 204, before auth (a browser sends no key with it): the methods, the
  headers the page asked for, and a max age;
- any other response gets ``Access-Control-Allow-Origin`` (the origin itself) and
  ``Access-Control-Expose-Headers``, so a page can read the headers it needs
  (``X-Stream-Id`` to bind a stream, ``X-Request-Id``, ``Retry-After``, ...).

A request from any other origin, or with no ``Origin``, gets no CORS header at all
(only ``Vary: Origin``), so the browser keeps the page from reading the answer.
No ``Access-Control-Allow-Credentials``: keys travel in the ``Authorization``
header, which needs none, and cookies are never used.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hypercorn.typing import (
    ASGIFramework,
    ASGIReceiveCallable,
    ASGISendCallable,
    HTTPScope,
    Scope,
)

ALLOW_METHODS = "GET, POST, HEAD, OPTIONS"
# Response headers of the API that a page on another origin may read (the
# CORS-safelisted ones, such as Content-Type, need no mention).
EXPOSE_HEADERS = (
    "X-Stream-Id, X-Session-Id, X-Request-Id, X-Stream-Request-Id, X-Jarvis-Worker, Retry-After"
)
MAX_AGE_SECONDS = 600


class Cors:
    """The middleware; with no origins it passes everything through."""

    def __init__(self, app: ASGIFramework, origins: Iterable[str]) -> None:
        self.app = app
        self.origins = frozenset(origin.encode("latin-1") for origin in origins)
        self.any_origin = b"*" in self.origins

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] != "http" or not self.origins:
            await self.app(scope, receive, send)
            return
        origin = _header(scope, b"origin")
        # Whatever the origin: the answer depends on it, so a cache must not share it.
        added = [(b"vary", b"Origin")]
        if origin is not None and self.allows(origin):
            if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
                await self._preflight(scope, origin, send)
                return
            added += [
                (b"access-control-allow-origin", origin),
                (b"access-control-expose-headers", EXPOSE_HEADERS.encode()),
            ]

        async def send_with_cors(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *added]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    async def _preflight(self, scope: HTTPScope, origin: bytes, send: ASGISendCallable) -> None:
        headers = [
            (b"access-control-allow-origin", origin),
            (b"access-control-allow-methods", ALLOW_METHODS.encode()),
            (b"access-control-max-age", str(MAX_AGE_SECONDS).encode()),
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
            (b"content-length", b"0"),
        ]
        # The page's own headers (Authorization, X-Session-Id, an SDK's x-stainless-*):
        # the origin is trusted, so whatever it asks to send is allowed.
        if requested := _header(scope, b"access-control-request-headers"):
            headers.append((b"access-control-allow-headers", requested))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def _header(scope: HTTPScope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key.lower() == name:
            return bytes(value)
    return None
