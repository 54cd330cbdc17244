"""Backend ``ollama``: NDJSON from ``POST /api/chat``, read in a worker thread.

How a cancel reaches a thread blocked on a silent Ollama:
:mod:`jarvis_trio.backends.upstream`. The protocol mapping:
:mod:`jarvis_trio.backends.ollama_wire`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from jarvis_trio.backends import ollama_wire
from jarvis_trio.backends.upstream import UpstreamBackend
from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import GenerationRequest, ModelInfo, Piece
from jarvis_trio.threads import CancelToken, run_in_worker


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

    async def show_model(self, name: str) -> dict[str, Any] | None:
        """Ollama's own ``/api/show`` for ``name``; ``None`` when Ollama has no such model.

        The gateway's ``/api/show`` relays it, so a tool sees the model's real
        capabilities (``vision``, ``thinking``...), template and parameters.
        """
        return await run_in_worker(partial(self._show, name), limiter=self.limiter)

    def _show(self, name: str, token: CancelToken) -> dict[str, Any] | None:
        what = "model description"
        body = self._json(
            token, "POST", "/api/show", what=what, json_body={"model": name}, missing_ok=True
        )
        if body is None:
            return None
        if not isinstance(body, dict):
            raise UpstreamError("The model server sent a malformed model description.")
        return body
