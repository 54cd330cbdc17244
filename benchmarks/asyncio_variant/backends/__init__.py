"""Model backends of the asyncio variant: blocking readers for ``asyncio.to_thread``.

The same names as :mod:`jarvis_trio.backends` (``ollama``, ``sim``) and the same
pure protocol code (:mod:`jarvis_trio.backends.ollama_wire`,
:func:`jarvis_trio.backends.sim.sim_pieces`); only the glue differs. A backend's
:meth:`ThreadBackend.read` is a plain blocking function that the stream runs in
``asyncio.to_thread``. It hands each piece of text to ``emit`` (which hops to the
event loop) and polls its stream's cancel flag between chunks, as the notes
describe, and nowhere else: no socket shutdown, no interruptible sleep.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from jarvis_trio.generation import GenerationRequest, GenerationResult, ModelInfo

# Called from the reader thread with each piece of text, in order.
Emit = Callable[[str], None]


class ReadCancelled(Exception):
    """Raised in a reader thread that saw its stream's cancel flag."""


class ThreadBackend(Protocol):
    name: str

    async def list_models(self) -> list[ModelInfo]: ...

    async def resolve_model(self, requested: str | None) -> str:
        """The model to use; raises :class:`jarvis_trio.errors.NotFound` for an unknown one."""
        ...

    def read(
        self, request: GenerationRequest, cancelled: threading.Event, emit: Emit
    ) -> GenerationResult:
        """Blocking: generate, ``emit`` each piece; raise :class:`ReadCancelled` on the flag."""
        ...

    def close(self) -> None: ...
