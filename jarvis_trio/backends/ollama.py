"""Backend ``ollama``: NDJSON from ``POST /api/chat``, read in a worker thread.

How a cancel reaches a thread blocked on a silent Ollama:
:mod:`jarvis_trio.backends.upstream`. The protocol mapping:
:mod:`jarvis_trio.backends.ollama_wire`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jarvis_trio.backends import ollama_wire
from jarvis_trio.backends.base import GenerationRequest, ModelInfo, Piece
from jarvis_trio.backends.upstream import UpstreamBackend


class OllamaBackend(UpstreamBackend):
    name = "ollama"
    models_path = "/api/tags"
    chat_path = "/api/chat"

    def chat_body(self, request: GenerationRequest) -> dict[str, Any]:
        return ollama_wire.chat_body(request)

    def parse_line(self, line: str) -> Piece | None:
        return ollama_wire.parse_chat_line(line)

    def line_parser(self) -> Callable[[str], Piece | None]:
        return ollama_wire.ChatLines()

    def parse_models(self, body: Any) -> list[ModelInfo]:
        return ollama_wire.models_from_tags(body)
