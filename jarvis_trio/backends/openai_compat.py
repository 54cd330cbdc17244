"""Backend ``openai``: any OpenAI-compatible server (vLLM, llama.cpp, LM Studio), read in threads.

The same thread and cancellation rules as the Ollama backend
(:mod:`jarvis_trio.backends.upstream`); the protocol mapping is
:mod:`jarvis_trio.backends.openai_wire`.
"""

from __future__ import annotations

from typing import Any

import trio

from jarvis_trio.backends import openai_wire
from jarvis_trio.backends.upstream import UpstreamBackend
from jarvis_trio.generation import GenerationRequest, ModelInfo, Piece


class OpenAICompatBackend(UpstreamBackend):
    name = "openai"
    models_path = "/models"
    chat_path = "/chat/completions"

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        limiter: trio.CapacityLimiter | None = None,
        default_model: str | None = None,
        connect_timeout: float = 5.0,
        models_ttl: float = 60.0,
        keepalive: int = 0,
    ) -> None:
        super().__init__(
            url,
            limiter=limiter,
            default_model=default_model,
            connect_timeout=connect_timeout,
            headers={"Authorization": f"Bearer {api_key}"} if api_key else None,
            models_ttl=models_ttl,
            keepalive=keepalive,
        )

    def chat_body(self, request: GenerationRequest) -> dict[str, Any]:
        return openai_wire.chat_body(request)

    def parse_line(self, line: str) -> Piece | None:
        return openai_wire.parse_sse_line(line)

    def parse_models(self, body: Any) -> list[ModelInfo]:
        return openai_wire.models_from_list(body)
