"""Backend ``sim``: our embedded model's text, paced with ``time.sleep`` in a reader thread.

The text is :func:`jarvis_trio.backends.sim.sim_pieces` (the same answers as
``jarvis-trio serve --backend sim``). The thread checks its stream's flag between
tokens; a ``time.sleep`` is not interrupted by it, so a cancelled thread runs for
up to one token interval more (50 ms at the default 20 tokens/s).
"""

from __future__ import annotations

import threading
import time

from benchmarks.asyncio_variant.backends import Emit, ReadCancelled
from jarvis_trio.backends.base import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Usage,
)
from jarvis_trio.backends.sim import MODEL_ID, count_words, sim_pieces
from jarvis_trio.errors import NotFound


class SimBackend:
    name = "sim"

    def __init__(self, *, tokens_per_second: float) -> None:
        self.interval = 1.0 / tokens_per_second

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=MODEL_ID, owned_by="jarvis-trio")]

    async def resolve_model(self, requested: str | None) -> str:
        if requested in (None, MODEL_ID):
            return MODEL_ID
        raise NotFound(
            f"The model {requested!r} does not exist; this server has {MODEL_ID!r}.",
            param="model",
            code="model_not_found",
        )

    def read(
        self, request: GenerationRequest, cancelled: threading.Event, emit: Emit
    ) -> GenerationResult:
        # As ours: hold back len(longest stop) - 1 characters, so a stop string
        # that straddles two tokens is never half-sent.
        hold = max((len(stop) for stop in request.stop), default=1) - 1
        text, sent, generated = "", 0, 0
        finish: FinishReason = "stop"
        next_at = time.monotonic()
        for piece in sim_pieces(request):
            if request.max_tokens is not None and generated >= request.max_tokens:
                finish = "length"
                break
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            if cancelled.is_set():  # the poll between tokens
                raise ReadCancelled
            text += piece
            generated += 1
            stops = [i for i in (text.find(s) for s in request.stop) if i >= 0]
            if stops:
                text = text[: min(stops)]
                break
            if len(text) - hold > sent:
                emit(text[sent : len(text) - hold])
                sent = len(text) - hold
        if len(text) > sent:
            emit(text[sent:])
        return GenerationResult(
            finish_reason=finish,
            usage=Usage(prompt_tokens=count_words(request), completion_tokens=generated),
        )

    def close(self) -> None:
        return None
