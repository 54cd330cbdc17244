"""The OpenAI request body, validated strictly, and its mapping to a GenerationRequest."""

from __future__ import annotations

import json
import math
import re
from types import MappingProxyType
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import ChatTurn, GenerationRequest, ToolCall

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)
# Messages and the body keep what they do not name: an OpenAI-compatible upstream
# gets it as sent (vendor extras such as vLLM's ``top_k``).
_OPEN = ConfigDict(strict=True, extra="allow", frozen=True)

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1, le=1_000_000)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]

# The fields the gateway owns: every other field of the body is the backend's to map.
GATEWAY_FIELDS = frozenset({"model", "stream", "stream_options", "messages", "prompt", "jarvis"})


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = _STRICT
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _data_or_http(cls, value: str) -> str:
        if not value.startswith(("data:image/", "http://", "https://")):
            raise ValueError("must be a data:image/... URL or an http(s) URL")
        return value


class ImagePart(BaseModel):
    model_config = _STRICT
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalPart(BaseModel):
    model_config = _STRICT
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    model_config = _STRICT
    name: ToolName
    arguments: str


class ToolCallModel(BaseModel):
    model_config = _OPEN
    id: Annotated[str, Field(min_length=1, max_length=256)]
    type: Literal["function"]
    function: FunctionCall


def _parts_of(value: object, allowed: tuple[str, ...]) -> object:
    """A clear message for a content part of a type this role cannot have."""
    if isinstance(value, list):
        for i, part in enumerate(value):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in allowed:
                names = ", ".join(repr(a) for a in allowed)
                raise ValueError(
                    f"content part {i} has type {kind!r}; this role takes parts of type {names}"
                )
    return value


class _Turn(BaseModel):
    model_config = _OPEN
    name: Annotated[str, Field(min_length=1, max_length=256)] | None = None

    def text(self) -> str:
        content = getattr(self, "content", None)
        if content is None:
            return ""
        if isinstance(content, str):
            return content
        return "".join(part.text for part in content if isinstance(part, TextPart))

    def images(self) -> tuple[str, ...]:
        content = getattr(self, "content", None)
        if not isinstance(content, list):
            return ()
        return tuple(p.image_url.url for p in content if isinstance(p, ImagePart))


class SystemMessage(_Turn):
    role: Literal["system", "developer"]
    content: str | list[TextPart]

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: object) -> object:
        return _parts_of(value, ("text",))


class UserMessage(_Turn):
    role: Literal["user"]
    content: str | list[UserPart]

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: object) -> object:
        return _parts_of(value, ("text", "image_url"))


class AssistantMessage(_Turn):
    role: Literal["assistant"]
    content: str | list[AssistantPart] | None = None
    refusal: str | None = None
    tool_calls: Annotated[list[ToolCallModel], Field(max_length=128)] | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: object) -> object:
        return _parts_of(value, ("text", "refusal"))


class ToolMessage(_Turn):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: Annotated[str, Field(min_length=1, max_length=256)]

    @field_validator("content", mode="before")
    @classmethod
    def _parts(cls, value: object) -> object:
        return _parts_of(value, ("text",))


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDef(BaseModel):
    model_config = _OPEN
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(BaseModel):
    model_config = _OPEN
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(BaseModel):
    model_config = _STRICT
    name: ToolName


class NamedToolChoice(BaseModel):
    model_config = _STRICT
    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(BaseModel):
    model_config = _OPEN
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class TextFormat(BaseModel):
    model_config = _STRICT
    type: Literal["text"]


class JsonObjectFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_object"]


class JsonSchemaResponseFormat(BaseModel):
    model_config = _STRICT
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class JarvisOptions(BaseModel):
    """The gateway's own request extension, ``"jarvis": {...}`` (never sent upstream)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    agent: bool | None = None


class StreamOptions(BaseModel):
    model_config = _OPEN
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat request, validated strictly; fields it does not name are kept."""

    model_config = _OPEN

    # "" means the default model, as omitting it does.
    model: Annotated[str, Field(max_length=256)] | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)] | None = None
    prompt: str | None = None
    stream: bool | None = False  # null: as absent
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None = None
    top_p: Probability | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] | None = 1
    tools: Annotated[list[ToolDef], Field(max_length=128)] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None
    metadata: Annotated[dict[str, str], Field(max_length=16)] | None = None
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100, allow_inf_nan=False)]] | None = (
        None
    )
    jarvis: JarvisOptions | None = None

    # The body as the client sent it (set by :func:`parse_chat_request`).
    _body: dict[str, Any] = PrivateAttr(default_factory=dict)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_sequences(cls, value: object) -> object:
        if value is None or isinstance(value, str):
            return value
        if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
            raise ValueError("stop must be a string or a list of strings")
        if len(value) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        return value

    @field_validator("logit_bias")
    @classmethod
    def _token_ids(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        if value is not None and not all(key.isdigit() for key in value):
            raise ValueError("logit_bias keys must be token ids (strings of digits)")
        return value

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or the shorthand 'prompt'")
        if self.stream_options is not None and not self.stream:
            raise FieldError(
                "stream_options", "it is only allowed when 'stream' is true", code="value_error"
            )
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "'top_logprobs' needs 'logprobs': true")
        if isinstance(self.tool_choice, NamedToolChoice):
            offered = {t.function.name for t in self.tools or ()}
            if self.tool_choice.function.name not in offered:
                raise FieldError(
                    "tool_choice",
                    f"it names {self.tool_choice.function.name!r}, which is not in 'tools'",
                )
        elif self.tool_choice == "required" and not self.tools:
            raise FieldError("tool_choice", "'required' needs 'tools'")
        for i, message in enumerate(self.messages or ()):
            if isinstance(message, AssistantMessage) and not (
                message.content is not None or message.tool_calls or message.refusal
            ):
                raise FieldError(
                    f"messages.{i}",
                    "an assistant message needs 'content', 'tool_calls' or 'refusal'",
                )
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    @property
    def body(self) -> dict[str, Any]:
        return self._body

    def wants_agent(self, default: bool) -> bool:
        """Agent mode: ``jarvis.agent`` if the client said, else the server's default."""
        said = self.jarvis.agent if self.jarvis is not None else None
        return default if said is None else said

    def to_generation(
        self, model: str, *, trace_session: str | None = None, agent: bool = False
    ) -> GenerationRequest:
        if self.messages is not None:
            turns = tuple(_turn(m) for m in self.messages)
            raw = tuple(
                m for m in self._body.get("messages") or () if isinstance(m, dict)
            ) or tuple(m.model_dump(mode="json", by_alias=True) for m in self.messages)
        else:
            turns = (ChatTurn("user", self.prompt or ""),)
            raw = ({"role": "user", "content": self.prompt or ""},)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        options = {k: v for k, v in self._body.items() if k not in GATEWAY_FIELDS}
        return GenerationRequest(
            model=model,
            messages=turns,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
            trace_session=trace_session,
            options=MappingProxyType(options),
            raw_messages=raw,
            agent=agent,
        )


def _turn(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> ChatTurn:
    calls: tuple[ToolCall, ...] = ()
    if isinstance(message, AssistantMessage) and message.tool_calls:
        calls = tuple(
            ToolCall(c.id, c.function.name, c.function.arguments) for c in message.tool_calls
        )
    return ChatTurn(
        message.role,
        message.text(),
        images=message.images(),
        tool_calls=calls,
        tool_call_id=message.tool_call_id if isinstance(message, ToolMessage) else None,
        name=message.name,
    )


# Session, request and stream ids: 1-128 characters that need no escaping in a URL path.
ID_PATTERN = re.compile(r"[A-Za-z0-9._~:@+=-]{1,128}")


def check_id(value: str, param: str, *, code: str = "invalid_id") -> str:
    """``value`` if it is a valid id, else :class:`InvalidRequest` naming ``param``."""
    if not ID_PATTERN.fullmatch(value):
        raise InvalidRequest(
            f"{param} must be 1-128 characters of A-Z a-z 0-9 . _ ~ : @ + = -",
            param=param,
            code=code,
        )
    return value


def parse_resume_seconds(value: str | None, limit: float) -> float:
    """``X-Jarvis-Resume-Seconds``: 0 when absent, else a number from 0 to ``limit``."""
    if value is None:
        return 0.0
    try:
        seconds = float(value.strip()) if len(value) <= 32 else math.nan
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= limit:  # also false for nan
        raise InvalidRequest(
            f"X-Jarvis-Resume-Seconds must be a number of seconds from 0 to {limit:g}.",
            param="X-Jarvis-Resume-Seconds",
            code="invalid_header",
        )
    return seconds


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or :class:`InvalidRequest` saying what is wrong."""
    if not raw.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError also covers bad UTF-8 and integers past Python's 4300-digit limit.
        raise InvalidRequest(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(value, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_json")
    try:
        # JSON may escape a lone surrogate ("\ud800"): valid JSON, but no text we
        # can pass to a model or write back as UTF-8.
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "The request body contains an unpaired UTF-16 surrogate.", code="invalid_text"
        ) from None
    return value


def parse_chat_request(raw: bytes) -> ChatCompletionRequest:
    body = parse_json_object(raw)
    if body.get("n", 1) != 1 and isinstance(body.get("n"), int):
        raise InvalidRequest(
            "Only n=1 is supported: a stream here carries one answer.",
            param="n",
            code="unsupported_value",
        )
    try:
        chat = ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None
    chat._body = body
    return chat


class FieldError(ValueError):
    """A rule across fields, naming the field at fault (the ``param`` of the 400)."""

    def __init__(self, param: str, message: str, *, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param = param
        self.code = code


# Where pydantic's location names a union member rather than a field: the tag of a
# tagged union (``messages.0.user.content``) or a member's type (``content.str``).
_TAGS = frozenset(
    (
        "system",
        "developer",
        "user",
        "assistant",
        "tool",
        "text",
        "json_object",
        "json_schema",
        "image_url",
        "refusal",
    )
)


def _param(loc: tuple[int | str, ...]) -> str | None:
    parts: list[str] = []
    for i, part in enumerate(loc):
        previous = loc[i - 1] if i else None
        is_tag = part in _TAGS and (isinstance(previous, int) or previous == "response_format")
        is_member = isinstance(part, str) and (
            "[" in part
            or part in ("str", "int", "float", "bool", "dict", "list", "none")
            or part[:1].isupper()  # a model class of a union: NamedToolChoice
        )
        if not (is_tag or is_member):
            parts.append(str(part))
    return ".".join(parts) or None


def _invalid(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    # For a union (content: a string or a list of parts) pydantic reports each member's
    # failure; the one that got deepest into the value says what is really wrong.
    first = max(errors, key=lambda e: len(_param(e["loc"]) or ""))
    first = next(e for e in errors if _param(e["loc"]) == _param(first["loc"]))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return InvalidRequest(f"{cause.param}: {cause}", param=cause.param, code=cause.code)
    param = _param(first["loc"])
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((first.get("ctx") or {}).get("discriminator", "")).strip("'")
        param = f"{param}.{tag}" if param else tag
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param, code=first["type"])
