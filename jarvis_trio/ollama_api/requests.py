"""Ollama's ``/api/chat``, ``/api/generate``, ``/api/show`` and ``/api/embed`` requests,
validated strictly and mapped to a :class:`GenerationRequest`. Pure: no I/O.

The mapping is the inverse of :mod:`jarvis_trio.backends.ollama_wire`, so a request
that comes in as Ollama's and goes out to Ollama arrives as it was sent, and one that
goes to an OpenAI-compatible upstream arrives in OpenAI's names:

- ``messages``: ``images`` (base64) become ``data:`` image URLs, ``tool_calls``
  (arguments as an object) OpenAI's calls with ids (``call_<message>_<n>`` when the
  client gave none), a ``tool`` message's ``tool_name`` the id of the call it answers;
- ``options``: ``temperature``, ``top_p``, ``seed``, ``stop``, ``num_predict``
  (``max_tokens``), ``frequency_penalty``, ``presence_penalty`` by their OpenAI names;
  Ollama's other sampling options (``top_k``, ``min_p``...) as vendor extras; the rest
  (``num_gpu``, ``use_mmap``...) only for Ollama (:attr:`GenerationRequest.ollama_extras`);
- ``format``: ``"json"`` is ``response_format: json_object``, a schema ``json_schema``;
- ``think``: a level (``"low"``...) is ``reasoning_effort``; ``true``/``false``, with
  ``keep_alive``, ``truncate`` and ``shift``, only for Ollama.

Unknown top-level fields are ignored, as Ollama does; a known one of the wrong type
is a 400 whose message names it (``options.temperature: ...``).
"""

from __future__ import annotations

import base64
import binascii
import json
from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import ChatTurn, GenerationRequest, ToolCall
from jarvis_trio.schemas import parse_json_object

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)
_OPEN = ConfigDict(strict=True, extra="allow", frozen=True)

ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
ModelName = Annotated[str, Field(max_length=256)]
ThinkLevel = Literal["low", "medium", "high"]

# Ollama's options by type (its api.Options); a value of another type is a 400.
_INT_OPTIONS = frozenset(
    (
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "mirostat",
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
    )
)
_FLOAT_OPTIONS = frozenset(
    (
        "top_p",
        "min_p",
        "typical_p",
        "temperature",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
    )
)
_BOOL_OPTIONS = frozenset(
    ("penalize_newline", "numa", "low_vram", "vocab_only", "use_mmap", "use_mlock")
)
# Sampling options OpenAI-compatible servers also read (llama.cpp, vLLM: top_k, min_p...):
# sent as vendor extras. Ollama's other options (num_ctx, num_gpu, use_mmap...) are
# about how Ollama runs the model, and go to Ollama only.
_SAMPLING_OPTIONS = frozenset(
    (
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "mirostat",
        "mirostat_tau",
        "mirostat_eta",
        "tfs_z",
    )
)
# Options the gateway maps to typed fields or to OpenAI's names.
_MAPPED_OPTIONS = frozenset(
    (
        "temperature",
        "top_p",
        "seed",
        "stop",
        "num_predict",
        "frequency_penalty",
        "presence_penalty",
    )
)


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: ToolName
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = None


class OllamaToolCall(BaseModel):
    model_config = _STRICT
    id: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    function: FunctionCall


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: Annotated[list[str], Field(max_length=64)] | None = None
    tool_calls: Annotated[list[OllamaToolCall], Field(max_length=128)] | None = None
    thinking: str | None = None
    tool_name: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _no_content(cls, value: object) -> object:
        return "" if value is None else value  # null is Ollama's "" (a Go string)

    @field_validator("images")
    @classmethod
    def _base64(cls, value: list[str] | None) -> list[str] | None:
        for i, image in enumerate(value or ()):
            _check_base64(image, i)
        return value


class FunctionDef(BaseModel):
    model_config = _OPEN
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(BaseModel):
    model_config = _OPEN
    type: Literal["function"] = "function"
    function: FunctionDef


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
            _check_option(key, option)
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
        opts = dict(self.options or {})
        extras: dict[str, Any] = {}
        vendor: dict[str, Any] = {}
        stop = opts.get("stop")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        num_predict = opts.get("num_predict")
        # Ollama: num_predict -1 (and any value <= 0) means no limit.
        max_tokens = num_predict if isinstance(num_predict, int) and num_predict > 0 else None
        for key in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty"):
            if opts.get(key) is not None:
                vendor[key] = opts[key]
        if stops:
            vendor["stop"] = list(stops)
        if max_tokens is not None:
            vendor["max_tokens"] = max_tokens
        rest = {k: v for k, v in opts.items() if k not in _MAPPED_OPTIONS and v is not None}
        vendor.update({k: v for k, v in rest.items() if k in _SAMPLING_OPTIONS})
        if native := {k: v for k, v in rest.items() if k not in _SAMPLING_OPTIONS}:
            extras["options"] = native
        if response_format := _response_format(self.format):
            vendor["response_format"] = response_format
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
        temperature = opts.get("temperature")
        top_p = opts.get("top_p")
        seed = opts.get("seed")
        return GenerationRequest(
            model=model,
            messages=turns,
            max_tokens=max_tokens,
            temperature=float(temperature) if temperature is not None else None,
            top_p=float(top_p) if top_p is not None else None,
            seed=seed if isinstance(seed, int) else None,
            stop=tuple(s for s in stops if s),
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
        turns, raw = _conversation(self.messages or [])
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
        for i, image in enumerate(value or ()):
            _check_base64(image, i)
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
        turns, raw = _conversation(messages)
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


class OptionError(ValueError):
    """A bad value in ``options``, naming the option (``options.temperature``)."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def _check_option(key: str, value: Any) -> None:
    param = f"options.{key}"
    if value is None:
        return
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if key in _INT_OPTIONS and (isinstance(value, bool) or not isinstance(value, int)):
        raise OptionError(param, f"option {key!r} must be an integer")
    if key in _FLOAT_OPTIONS and not number:
        raise OptionError(param, f"option {key!r} must be a number")
    if key in _BOOL_OPTIONS and not isinstance(value, bool):
        raise OptionError(param, f"option {key!r} must be a boolean")
    if key == "stop" and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(s, str) for s in value))
    ):
        raise OptionError(param, "option 'stop' must be a string or a list of strings")
    if key in ("temperature",) and number and value < 0:
        raise OptionError(param, "option 'temperature' must be at least 0")
    if key in ("top_p", "min_p", "typical_p") and number and not 0 <= value <= 1:
        raise OptionError(param, f"option {key!r} must be from 0 to 1")


def _check_base64(image: str, index: int) -> None:
    try:
        base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {index} is not valid base64") from None


_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def image_url(data: str) -> str:
    """A base64 image as a ``data:`` URL, its type read from its first bytes."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    kind = next((t for magic, t in _IMAGE_TYPES if head.startswith(magic)), None)
    if kind is None:
        kind = "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else "image/png"
    return f"data:{kind};base64,{data}"


def _response_format(value: str | dict[str, Any] | None) -> dict[str, Any] | None:
    if value == "json":
        return {"type": "json_object"}
    if isinstance(value, dict):
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": value}}
    return None


def _conversation(
    messages: list[Message],
) -> tuple[tuple[ChatTurn, ...], tuple[dict[str, Any], ...]]:
    """Ollama's messages as turns, and as OpenAI's messages (for an OpenAI upstream)."""
    turns: list[ChatTurn] = []
    raw: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # calls not yet answered: (id, name)
    for i, message in enumerate(messages):
        images = tuple(image_url(data) for data in message.images or ())
        if images and message.role != "user":
            raise InvalidRequest(
                f"messages.{i}.images: only user messages may carry images.",
                param=f"messages.{i}.images",
                code="invalid_value",
            )
        calls = tuple(
            ToolCall(
                call.id or f"call_{i}_{j}",
                call.function.name,
                json.dumps(call.function.arguments, ensure_ascii=False),
            )
            for j, call in enumerate(message.tool_calls or ())
        )
        if calls and message.role != "assistant":
            raise InvalidRequest(
                f"messages.{i}.tool_calls: only assistant messages may carry tool calls.",
                param=f"messages.{i}.tool_calls",
                code="invalid_value",
            )
        pending.extend((c.id, c.name) for c in calls)
        call_id = None
        if message.role == "tool":
            call_id = message.tool_call_id or _answered(pending, message.tool_name) or f"call_{i}"
        turns.append(
            ChatTurn(
                message.role,
                message.content,
                images=images,
                tool_calls=calls,
                tool_call_id=call_id,
                name=message.tool_name,
            )
        )
        raw.append(_openai_message(message, images, calls, call_id))
    return tuple(turns), tuple(raw)


def _answered(pending: list[tuple[str, str]], name: str | None) -> str | None:
    """The id of the call a tool result answers: the oldest open call of its name (of
    any name when the result names none), which is then no longer open."""
    for k, (call_id, call_name) in enumerate(pending):
        if name is None or call_name == name:
            del pending[k]
            return call_id
    return None


def _openai_message(
    message: Message, images: tuple[str, ...], calls: tuple[ToolCall, ...], call_id: str | None
) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if images:
        out["content"] = [
            {"type": "text", "text": message.content},
            *({"type": "image_url", "image_url": {"url": url}} for url in images),
        ]
    if calls:
        out["content"] = message.content or None
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in calls
        ]
    if call_id is not None:
        out["tool_call_id"] = call_id
    return out
