"""The one small interface every model backend implements.

A backend turns a :class:`GenerationRequest` into text pieces pushed to a
:class:`Sink`. It is called inside the stream's cancel scope; when that scope
is cancelled it must stop promptly and emit nothing more. Threaded backends
get that for free from :mod:`jarvis_trio.threads`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol

Role = Literal["system", "developer", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate, independent of the wire format it came in."""

    model: str
    messages: tuple[ChatTurn, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Who asked, for upstream tracing (``X-Jarvis-Session``); never shown to the model.
    trace_session: str | None = None

    @property
    def prompt(self) -> str:
        """The last user turn: what the user just asked."""
        for turn in reversed(self.messages):
            if turn.role == "user":
                return turn.content
        return self.messages[-1].content if self.messages else ""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True, slots=True)
class GenerationResult:
    finish_reason: FinishReason
    usage: Usage


@dataclass(frozen=True, slots=True)
class Piece:
    """One parsed unit of an upstream's streamed answer, whatever its protocol.

    ``finish_reason`` and ``usage`` are set on the unit that carries them; ``end``
    marks the protocol's explicit end (Ollama's ``done``, OpenAI's ``[DONE]``).
    """

    content: str = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    end: bool = False


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str
    created: int = 0


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Upstream text as valid Unicode: a lone surrogate (legal in JSON) becomes U+FFFD.

    Written back as UTF-8 it would otherwise fail mid-response and cut the stream.
    """
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


class Sink(Protocol):
    """Where a backend delivers its output, from the trio side."""

    def opened(self) -> None:
        """The upstream accepted the request; headers may now go to the client."""

    async def send(self, text: str) -> None:
        """Deliver one piece of text. Raises ``Cancelled`` once the stream is cancelled."""


class Backend(Protocol):
    name: str

    async def list_models(self) -> list[ModelInfo]: ...

    async def resolve_model(self, requested: str | None) -> str:
        """The model to use for ``requested`` (``None``: the default).

        Raises :class:`jarvis_trio.errors.NotFound` for a model it does not serve.
        """
        ...

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult: ...

    async def aclose(self) -> None: ...
