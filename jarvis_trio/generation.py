"""The one small interface every model backend implements.

A backend turns a :class:`GenerationRequest` into text pieces pushed to a
:class:`Sink`. It is called inside the stream's cancel scope; when that scope
is cancelled it must stop promptly and emit nothing more. Threaded backends
get that for free from :mod:`jarvis_trio.threads`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["system", "developer", "user", "assistant", "tool"]


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the model asked for, as OpenAI writes it (``arguments`` is JSON text)."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """The call as an OpenAI message's (or a chunk's, with an ``index``) tool call."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments},
        }


@dataclass(frozen=True, slots=True)
class ChatTurn:
    role: Role
    content: str
    # Image URLs of the turn's ``image_url`` parts (``data:`` or http(s)), in order.
    images: tuple[str, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None

    def as_openai(self) -> dict[str, Any]:
        """The turn as an OpenAI chat message: image parts, tool calls, the call answered."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.images:
            out["content"] = [
                {"type": "text", "text": self.content},
                *({"type": "image_url", "image_url": {"url": url}} for url in self.images),
            ]
        if self.tool_calls:
            out["content"] = self.content or None
            out["tool_calls"] = [call.as_openai() for call in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        return out


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """What to generate, independent of the wire format it came in.

    The typed fields are what every backend understands. ``options`` holds the
    rest of the client's body as sent (tools, response_format, penalties, vendor
    extras...), less the fields the gateway owns (``model``, ``stream``,
    ``stream_options``); a backend maps each one, passes it on, or refuses it.
    """

    model: str
    messages: tuple[ChatTurn, ...]
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Who asked, for upstream tracing (``X-Jarvis-Session``); never shown to the model.
    trace_session: str | None = None
    options: Mapping[str, Any] = field(default_factory=_empty)
    # The client's messages as sent, for backends that speak OpenAI's protocol.
    raw_messages: tuple[Mapping[str, Any], ...] = ()
    # Run as an agent: the gateway runs the model's calls of its MCP tools (jarvis_trio.agent).
    agent: bool = False
    # From an Ollama client (``/api/chat``, ``/api/generate``): what only Ollama has a
    # use for (``keep_alive``, ``think`` as a boolean, ``truncate``, ``shift``, and the
    # ``options`` with no OpenAI name). The ollama backend sends them as they came;
    # the others leave them out.
    ollama_extras: Mapping[str, Any] = field(default_factory=_empty)

    @property
    def tools(self) -> list[dict[str, Any]]:
        """The function tools offered (OpenAI's ``tools``); none when ``tool_choice`` is
        ``"none"``."""
        tools = self.options.get("tools") or []
        if self.options.get("tool_choice") == "none":
            return []
        return [t for t in tools if isinstance(t, dict) and t.get("type") == "function"]

    @property
    def response_format(self) -> Mapping[str, Any] | None:
        value = self.options.get("response_format")
        return value if isinstance(value, Mapping) else None

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
    # The upstream's other usage keys (``prompt_tokens_details``...), relayed as sent.
    extra: Mapping[str, Any] = field(default_factory=_empty, compare=False)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]
FINISH_REASONS: frozenset[str] = frozenset(
    ("stop", "length", "tool_calls", "content_filter", "function_call")
)


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of an answer that is more than plain text, in OpenAI's names.

    ``fields`` are the delta's keys besides ``content`` (``tool_calls``,
    ``reasoning_content``, ``refusal``...), ``logprobs`` the choice's log
    probabilities for this piece, and ``extra`` the chunk's own top-level keys
    that OpenAI's chunk does not have (an upstream's ``timings``...).
    Plain text travels as a ``str``: the common case costs no object.
    """

    content: str = ""
    fields: Mapping[str, Any] = field(default_factory=_empty)
    logprobs: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=_empty)

    def size(self) -> int:
        """Characters it stands for, roughly (for buffer bounds)."""
        return len(self.content) + len(repr(self.fields)) + len(repr(self.logprobs))


# What a stream carries: text, or a richer piece.
Output = str | Delta


@dataclass(frozen=True, slots=True)
class GenerationResult:
    finish_reason: FinishReason
    usage: Usage
    # The model the upstream says answered (None: the one asked for).
    model: str | None = None
    # The final chunk's or body's top-level keys beyond OpenAI's (``timings``...).
    extra: Mapping[str, Any] = field(default_factory=_empty)


@dataclass(frozen=True, slots=True)
class Piece:
    """One parsed unit of an upstream's streamed answer, whatever its protocol.

    ``finish_reason`` and ``usage`` are set on the unit that carries them; ``end``
    marks the protocol's explicit end (Ollama's ``done``, OpenAI's ``[DONE]``).
    ``output`` is what to relay (text or a :class:`Delta`), ``model`` the model
    the upstream names, ``extra`` top-level keys to keep for the final answer.
    """

    output: Output = ""
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    end: bool = False
    model: str | None = None
    extra: Mapping[str, Any] = field(default_factory=_empty)

    @property
    def content(self) -> str:
        return self.output if isinstance(self.output, str) else self.output.content


@dataclass(frozen=True, slots=True)
class ModelInfo:
    id: str
    owned_by: str
    created: int = 0
    # An Ollama upstream's own /api/tags entry (size, digest, details...), which the
    # gateway's /api/tags and /api/show relay; empty for the other backends.
    listing: Mapping[str, Any] = field(default_factory=_empty, compare=False)


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """Upstream text as valid Unicode: a lone surrogate (legal in JSON) becomes U+FFFD.

    Written back as UTF-8 it would otherwise fail mid-response and cut the stream.
    """
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def find_model(models: Iterable[ModelInfo], name: str) -> ModelInfo | None:
    """The model ``name`` names. As in Ollama, a name without a tag is ``name:latest``;
    and ``name:latest`` is also a listed ``name`` (the ids of OpenAI-compatible
    servers and the embedded model have no tag)."""
    listed = {m.id: m for m in models}
    untagged = ":" not in name.rsplit("/", 1)[-1]
    for candidate in (name, name.removesuffix(":latest"), name + ":latest" if untagged else ""):
        if candidate in listed:
            return listed[candidate]
    return None


class Sink(Protocol):
    """Where a backend delivers its output, from the trio side."""

    def opened(self, model: str | None = None) -> None:
        """The upstream answered (``model``: the model it names); headers may now go out."""

    async def send(self, piece: Output) -> None:
        """Deliver one piece. Raises ``Cancelled`` once the stream is cancelled."""


@runtime_checkable
class DirectSink(Sink, Protocol):
    """A sink that is a stream itself: it takes a piece without waiting when it has
    room, and tells of its cancel at the moment it is cancelled."""

    def offer(self, piece: Output) -> bool:
        """Deliver ``piece`` now, as :meth:`send` would, if that needs no wait and the
        sink is not cancelled; else deliver nothing and return False (use :meth:`send`).
        Called from a ``run_sync_soon`` callback, outside any task (and so may be
        :meth:`~Sink.opened`: neither may raise)."""
        ...

    def call_on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` (quick, thread-safe) when the sink is cancelled, in the
        cancelling call itself; returns what takes it back."""
        ...


class Backend(Protocol):
    name: str

    async def list_models(self) -> list[ModelInfo]: ...

    def check_request(self, request: GenerationRequest) -> None:
        """Raise :class:`jarvis_trio.errors.InvalidRequest` (400) for a request this
        backend cannot honour as asked, before it is admitted to its session."""
        ...

    async def resolve_model(self, requested: str | None) -> str:
        """The model to use for ``requested`` (``None``: the default), asking nothing
        upstream on the request path.

        ``""``: the default is not known yet; :meth:`generate` resolves it, inside the
        stream, after its session has acted. Raises :class:`jarvis_trio.errors.NotFound`
        for a model it does not serve.
        """
        ...

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult: ...

    async def aclose(self) -> None: ...
