"""Ollama's ``/api/chat``, ``/api/generate``, ``/api/show`` and ``/api/embed`` requests,
validated strictly and mapped to a :class:`GenerationRequest`. Pure: no I/O.

The mapping is the inverse of :mod:`jarvis_trio.backends.ollama_wire`, so a request
that comes in as Ollama's and goes out to Ollama arrives as it was sent, and one that
goes to an OpenAI-compatible upstream arrives in OpenAI's names:

- ``messages`` and ``tools``: :mod:`.conversation`;
- ``options`` and ``format``: :mod:`.options`;
- ``think``: a level (``"low"``...) is ``reasoning_effort``; ``true``/``false``, with
  ``keep_alive``, ``truncate`` and ``shift``, only for Ollama.

Unknown top-level fields are ignored, as Ollama does; a known one of the wrong type
is a 400 whose message names it (``options.temperature: ...``).
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError, field_validator

from jarvis_trio.api.ollama.conversation import Message, Tool, check_images, conversation
from jarvis_trio.api.ollama.options import (
    OptionError,
    check_option,
    map_options,
    response_format,
)
from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import ChatTurn, GenerationRequest
from jarvis_trio.schemas import parse_json_object
from jarvis_trio.schemas.fields import STRICT as _STRICT

ModelName = Annotated[str, Field(max_length=256)]
ThinkLevel = Literal["low", "medium", "high"]


class _Generation(BaseModel):
    """The fields ``/api/chat`` and ``/api/generate`` share."""

    model_config = _STRICT
    model: ModelName = ""
    stream: bool | None = None
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None
    think: bool | ThinkLevel | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    truncate: bool | None = None
    shift: bool | None = None

    @field_validator("options")
    @classmethod
    def _options(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        for key, option in (value or {}).items():
            check_option(key, option)
        return value

    @property
    def streaming(self) -> bool:
        """Ollama streams unless told ``"stream": false``."""
        return self.stream is not False

    @property
    def unloads(self) -> bool:
        """``keep_alive: 0`` (with nothing to answer): the client asks for an unload."""
        return self.keep_alive in (0, "0", "0s", "0m", "0h")

    def _generation(
        self, model: str, turns: tuple[ChatTurn, ...], raw: tuple[dict[str, Any], ...]
    ) -> GenerationRequest:
        mapped = map_options(self.options)
        vendor = dict(mapped.vendor)
        extras: dict[str, Any] = {}
        if mapped.native:
            extras["options"] = mapped.native
        if fmt := response_format(self.format):
            vendor["response_format"] = fmt
        if isinstance(self.think, str):
            vendor["reasoning_effort"] = self.think
        elif self.think is not None:
            extras["think"] = self.think
        if self.logprobs:
            vendor["logprobs"] = True
            if self.top_logprobs:
                vendor["top_logprobs"] = self.top_logprobs
        for key in ("keep_alive", "truncate", "shift"):
            if getattr(self, key) is not None:
                extras[key] = getattr(self, key)
        tools = getattr(self, "tools", None)
        if tools:
            vendor["tools"] = [t.model_dump(mode="json", exclude_none=True) for t in tools]
        return GenerationRequest(
            model=model,
            messages=turns,
            max_tokens=mapped.max_tokens,
            temperature=mapped.temperature,
            top_p=mapped.top_p,
            seed=mapped.seed,
            stop=tuple(s for s in mapped.stops if s),
            options=MappingProxyType(vendor),
            raw_messages=raw,
            ollama_extras=MappingProxyType(extras),
        )


class ChatRequest(_Generation):
    """``POST /api/chat``."""

    messages: Annotated[list[Message], Field(max_length=10_000)] | None = None
    tools: Annotated[list[Tool], Field(max_length=128)] | None = None

    @property
    def loads_only(self) -> bool:
        """No messages: Ollama loads (or, with ``keep_alive: 0``, unloads) the model."""
        return not self.messages

    def to_generation(self, model: str) -> GenerationRequest:
        turns, raw = conversation(self.messages or [])
        return self._generation(model, turns, raw)


class GenerateRequest(_Generation):
    """``POST /api/generate``: a prompt (and a system prompt) as a one-turn chat."""

    prompt: str = ""
    system: str | None = None
    images: Annotated[list[str], Field(max_length=64)] | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None

    @field_validator("images")
    @classmethod
    def _base64(cls, value: list[str] | None) -> list[str] | None:
        check_images(value)
        return value

    @property
    def loads_only(self) -> bool:
        """An empty prompt: Ollama loads (or, with ``keep_alive: 0``, unloads) the model."""
        return not self.prompt

    def check_supported(self) -> None:
        """Refuse, naming the field, what a gateway in front of any backend cannot honour."""
        refused = {
            "suffix": (self.suffix, "fill-in-the-middle needs the model's own template"),
            "template": (self.template, "the prompt template is the backend's"),
            "raw": (self.raw, "a raw prompt needs the model's own template"),
            "context": (self.context, "the gateway returns no context to send back"),
        }
        for name, (value, why) in refused.items():
            if value:
                raise InvalidRequest(
                    f"{name} is not supported by the gateway: {why}.",
                    param=name,
                    code="unsupported_parameter",
                )

    def to_generation(self, model: str) -> GenerationRequest:
        messages = []
        if self.system:
            messages.append(Message(role="system", content=self.system))
        messages.append(Message(role="user", content=self.prompt, images=self.images))
        turns, raw = conversation(messages)
        return self._generation(model, turns, raw)


class ShowRequest(BaseModel):
    """``POST /api/show``: ``model`` (or the older ``name``)."""

    model_config = _STRICT
    model: ModelName | None = None
    name: ModelName | None = None
    verbose: bool | None = None

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""


class EmbedRequest(BaseModel):
    """``POST /api/embed``: validated, though no backend embeds (see the routes)."""

    model_config = _STRICT
    model: ModelName = ""
    input: str | list[str] | None = None
    truncate: bool | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | int | float | None = None


def parse_chat(raw: bytes) -> ChatRequest:
    return _parse(ChatRequest, raw)


def parse_generate(raw: bytes) -> GenerateRequest:
    request = _parse(GenerateRequest, raw)
    request.check_supported()
    return request


def parse_show(raw: bytes) -> ShowRequest:
    return _parse(ShowRequest, raw)


def parse_embed(raw: bytes) -> EmbedRequest:
    return _parse(EmbedRequest, raw)


M = TypeVar("M", bound=BaseModel)


def _parse(kind: type[M], raw: bytes) -> M:
    body = parse_json_object(raw)
    try:
        request = kind.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    if not getattr(request, "model", None) and not getattr(request, "name", None):
        raise InvalidRequest("model is required", param="model", code="missing_required")
    return request


def _invalid(exc: ValidationError) -> InvalidRequest:
    # For a union (format: "json" or a schema) pydantic reports each member's failure;
    # the one with the longest location got deepest into the value.
    error = max(exc.errors(include_url=False), key=lambda e: len(e["loc"]))
    parts = [str(p) for p in error["loc"] if not _is_member(p)]
    param = ".".join(parts) or None
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, OptionError):
        param = cause.param
    message = error["msg"].removeprefix("Value error, ")
    return InvalidRequest(
        f"{param}: {message}" if param else message, param=param, code=error["type"]
    )


def _is_member(part: int | str) -> bool:
    """A union member's name in a location (``format.literal['','json']``), not a field."""
    return isinstance(part, str) and (
        "[" in part or part in ("str", "int", "float", "bool", "dict", "list", "none")
    )
