"""Backend ``ollama``: NDJSON from ``POST /api/chat``, read in a worker thread.

See :mod:`jarvis_trio.backends.upstream` for how a cancel reaches a thread
that is blocked on a silent Ollama.
"""

from __future__ import annotations

import json
from functools import partial

import trio

from jarvis_trio.backends.base import (
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Sink,
    Usage,
)
from jarvis_trio.backends.ollama_wire import (
    chat_body,
    error_for_status,
    models_from_tags,
    parse_chat_line,
)
from jarvis_trio.backends.upstream import UpstreamHttp, read_error_body
from jarvis_trio.errors import InvalidRequest, UpstreamError
from jarvis_trio.threads import CancelToken, run_in_worker


class OllamaBackend:
    name = "ollama"

    def __init__(
        self,
        url: str,
        *,
        limiter: trio.CapacityLimiter | None = None,
        default_model: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        self.default_model = default_model
        self.limiter = limiter
        self._http = UpstreamHttp(url, connect_timeout=connect_timeout)

    async def list_models(self) -> list[ModelInfo]:
        return await run_in_worker(self._tags, limiter=self.limiter)

    async def resolve_model(self, requested: str | None) -> str:
        if requested:
            return requested  # an unknown model is Ollama's 404, mapped before streaming
        if self.default_model:
            return self.default_model
        models = await self.list_models()
        if not models:
            raise InvalidRequest(
                f"No model was given and the Ollama at {self.url} has none; pull one first.",
                param="model",
                code="model_required",
            )
        return models[0].id

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        return await run_in_worker(partial(self._chat, request, sink), limiter=self.limiter)

    async def aclose(self) -> None:
        self._http.close()

    # -- worker thread side

    def _tags(self, token: CancelToken) -> list[ModelInfo]:
        with self._http.request(token, "GET", "/api/tags") as response:
            if response.status_code != 200:
                raise UpstreamError(
                    f"The Ollama at {self.url} failed to list models "
                    f"(HTTP {response.status_code}): {read_error_body(response)[:200]}"
                )
            try:
                body = json.loads(response.read())
            except json.JSONDecodeError:
                raise UpstreamError("The model server sent a malformed model list.") from None
        return models_from_tags(body)

    def _chat(self, request: GenerationRequest, sink: Sink, token: CancelToken) -> GenerationResult:
        with self._http.request(token, "POST", "/api/chat", json=chat_body(request)) as response:
            if response.status_code != 200:
                body = read_error_body(response)
                raise error_for_status(
                    response.status_code, body, model=request.model, url=self.url
                )
            trio.from_thread.run_sync(sink.opened)
            sent = 0
            for raw in response.iter_lines():
                token.raise_if_cancelled()
                line = parse_chat_line(raw)
                if line is None:
                    continue
                if line.content:
                    trio.from_thread.run(sink.send, line.content)
                    sent += 1
                if line.done:
                    return GenerationResult(line.finish_reason, line.usage or Usage(0, sent))
        raise UpstreamError(
            f"The Ollama at {self.url} ended the answer without a final line.",
            code="upstream_incomplete",
        )
