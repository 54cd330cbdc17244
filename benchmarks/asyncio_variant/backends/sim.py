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
from jarvis_trio.backends.sim import (
    MODEL_ID,
    StopFilter,
    count_words,
    resolve_sim_model,
    sim_pieces,
)
from jarvis_trio.generation import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Usage,
)


class SimBackend:
    name = "sim"

    def __init__(self, *, tokens_per_second: float) -> None:
        self.interval = 1.0 / tokens_per_second

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(id=MODEL_ID, owned_by="jarvis-trio")]

    async def resolve_model(self, requested: str | None) -> str:
        return resolve_sim_model(requested)

    def read(
        self, request: GenerationRequest, cancelled: threading.Event, emit: Emit
    ) -> GenerationResult:
        stops = StopFilter(request.stop)  # ours: stop strings never half-sent
        finish: FinishReason = "stop"
        generated = 0
        next_at = time.monotonic()
        for piece in sim_pieces(request):
            if request.max_tokens is not None and generated >= request.max_tokens:
                finish = "length"
                break
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            if cancelled.is_set():  # the poll between tokens
                raise ReadCancelled
            generated += 1
            if out := stops.feed(piece):
                emit(out)
            if stops.stopped:
                break
        if tail := stops.flush():
            emit(tail)
        return GenerationResult(
            finish_reason=finish,
            usage=Usage(prompt_tokens=count_words(request), completion_tokens=generated),
        )

    def close(self) -> None:
        return None
