"""Backend ``ollama``: a blocking ``httpx.Client`` stream of ``POST /api/chat``, in a thread.

The protocol is ours (:mod:`jarvis_trio.backends.ollama_wire`), so both
variants send byte-for-byte the same request and read the answer the same
way; so are the timeouts (connect 5 s, no read timeout) and the upstream error
mapping. What is *not* ours is cancellation: the thread checks its stream's flag
between lines and only there. A thread blocked in ``recv()`` on a silent
upstream (a model loading, a stalled GPU) sees no flag until the next line, so
it stays blocked, holding its connection and one of the event loop's default
executor threads, ``min(32, os.cpu_count() + 4)`` of them.

The client is one shared ``httpx.Client`` with its default pool (keep-alive on),
as a straightforward implementation would have it.
"""

from __future__ import annotations

import asyncio
import json
import threading

import httpx

from benchmarks.asyncio_variant.backends import Emit, ReadCancelled
from jarvis_trio.backends import ollama_wire

# Shared reading of a failed response (no trio involved); the socket shutdown is not used.
from jarvis_trio.backends.upstream import read_error_body
from jarvis_trio.errors import (
    ApiError,
    InvalidRequest,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
    upstream_error_message,
    upstream_status_error,
)
from jarvis_trio.generation import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Usage,
)


class OllamaBackend:
    name = "ollama"

    def __init__(
        self, url: str, *, default_model: str | None = None, connect_timeout: float = 5.0
    ) -> None:
        self.url = url.rstrip("/")
        self.default_model = default_model
        self._client = httpx.Client(
            base_url=self.url, timeout=httpx.Timeout(connect_timeout, read=None)
        )

    async def list_models(self) -> list[ModelInfo]:
        return await asyncio.to_thread(self._models)

    async def resolve_model(self, requested: str | None) -> str:
        if requested:
            return requested  # an unknown model is the upstream's 404
        if self.default_model:
            return self.default_model
        models = await self.list_models()
        if not models:
            raise InvalidRequest(
                f"No model was given and the model server at {self.url} lists none.",
                param="model",
                code="model_required",
            )
        return models[0].id

    def read(
        self, request: GenerationRequest, cancelled: threading.Event, emit: Emit
    ) -> GenerationResult:
        body = ollama_wire.chat_body(request)
        headers = {"X-Jarvis-Session": request.trace_session} if request.trace_session else None
        sent = 0
        finish: FinishReason | None = None
        usage: Usage | None = None
        try:
            with self._client.stream("POST", "/api/chat", json=body, headers=headers) as response:
                if response.status_code != 200:
                    message = upstream_error_message(read_error_body(response))
                    raise upstream_status_error(
                        response.status_code, message, model=request.model, url=self.url
                    )
                for line in response.iter_lines():
                    if cancelled.is_set():  # the notes' poll between chunks, and the only one
                        raise ReadCancelled
                    piece = ollama_wire.parse_chat_line(line)
                    if piece is None:
                        continue
                    if piece.content:
                        emit(piece.content)
                        sent += 1
                    finish = piece.finish_reason or finish
                    usage = piece.usage or usage
                    if piece.end:
                        break
        except httpx.HTTPError as exc:
            raise self._map(exc) from None
        if finish is None:
            raise UpstreamError(
                f"The model server at {self.url} ended the answer without finishing it.",
                code="upstream_incomplete",
            )
        return GenerationResult(finish, usage or Usage(0, sent))

    def close(self) -> None:
        self._client.close()

    def _models(self) -> list[ModelInfo]:
        try:
            response = self._client.get("/api/tags")
        except httpx.HTTPError as exc:
            raise self._map(exc) from None
        if response.status_code != 200:
            raise UpstreamError(
                f"{self.url}/api/tags failed (HTTP {response.status_code}): "
                f"{upstream_error_message(response.text)}"
            )
        try:
            body = json.loads(response.content)
        except ValueError:
            raise UpstreamError("The model server sent a malformed model list.") from None
        return ollama_wire.models_from_tags(body)

    def _map(self, exc: httpx.HTTPError) -> ApiError:
        """Transport failures as ours maps them (``jarvis_trio.backends.upstream``)."""
        if isinstance(exc, httpx.ConnectError):
            return ServiceUnavailable(
                f"Cannot reach the model server at {self.url}: {exc}.",
                code="upstream_unreachable",
            )
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(
                f"The model server at {self.url} timed out: {exc!r}.", code="upstream_timeout"
            )
        return UpstreamError(
            f"The model server at {self.url} closed the connection mid-response ({exc}).",
            code="upstream_disconnected",
        )
