"""Backend ``openai``: any OpenAI-compatible server (vLLM, llama.cpp, LM Studio), read in threads.

Same thread and cancellation rules as the Ollama backend
(:mod:`jarvis_trio.backends.upstream`).
"""

from __future__ import annotations

import json
from functools import partial

import trio

from jarvis_trio.backends.base import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Sink,
    Usage,
)
from jarvis_trio.backends.openai_wire import (
    chat_body,
    error_for_status,
    models_from_list,
    parse_sse_line,
)
from jarvis_trio.backends.upstream import UpstreamHttp, read_error_body
from jarvis_trio.errors import InvalidRequest, UpstreamError
from jarvis_trio.threads import CancelToken, run_in_worker


class OpenAICompatBackend:
    name = "openai"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        limiter: trio.CapacityLimiter | None = None,
        default_model: str | None = None,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.default_model = default_model
        self.limiter = limiter
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._http = UpstreamHttp(self.url, connect_timeout=connect_timeout, headers=headers)

    async def list_models(self) -> list[ModelInfo]:
        return await run_in_worker(self._models, limiter=self.limiter)

    async def resolve_model(self, requested: str | None) -> str:
        if requested:
            return requested
        if self.default_model:
            return self.default_model
        models = await self.list_models()
        if not models:
            raise InvalidRequest(
                f"No model was given and {self.url} lists none.",
                param="model",
                code="model_required",
            )
        return models[0].id

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        return await run_in_worker(partial(self._chat, request, sink), limiter=self.limiter)

    async def aclose(self) -> None:
        self._http.close()

    # -- worker thread side

    def _models(self, token: CancelToken) -> list[ModelInfo]:
        with self._http.request(token, "GET", "/models") as response:
            if response.status_code != 200:
                raise UpstreamError(
                    f"{self.url}/models failed (HTTP {response.status_code}): "
                    f"{read_error_body(response)[:200]}"
                )
            try:
                body = json.loads(response.read())
            except json.JSONDecodeError:
                raise UpstreamError("The model server sent a malformed model list.") from None
        return models_from_list(body)

    def _chat(self, request: GenerationRequest, sink: Sink, token: CancelToken) -> GenerationResult:
        with self._http.request(
            token, "POST", "/chat/completions", json=chat_body(request)
        ) as response:
            if response.status_code != 200:
                body = read_error_body(response)
                raise error_for_status(
                    response.status_code, body, model=request.model, url=self.url
                )
            trio.from_thread.run_sync(sink.opened)
            sent = 0
            finish: FinishReason | None = None
            usage: Usage | None = None
            for line in response.iter_lines():
                token.raise_if_cancelled()
                chunk = parse_sse_line(line)
                if chunk is None:
                    continue
                if chunk.done:
                    if finish is None:
                        break
                    return GenerationResult(finish, usage or Usage(0, sent))
                if chunk.content:
                    trio.from_thread.run(sink.send, chunk.content)
                    sent += 1
                finish = chunk.finish_reason or finish
                usage = chunk.usage or usage
        raise UpstreamError(
            f"The model server at {self.url} ended the answer without finishing it.",
            code="upstream_incomplete",
        )
