"""The OpenAI request body, validated strictly, and its mapping to a GenerationRequest."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from jarvis_trio.backends.base import ChatTurn, GenerationRequest
from jarvis_trio.errors import InvalidRequest

_STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1, le=1_000_000)]


class TextPart(BaseModel):
    model_config = _STRICT
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart]
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts_only(cls, value: object) -> object:
        if isinstance(value, list):
            for part in value:
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    raise ValueError(
                        "only text content parts ({'type': 'text', 'text': ...}) are supported"
                    )
        return value

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = _STRICT
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's body we honour; other fields are accepted and ignored."""

    model_config = _STRICT

    model: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)] | None = None
    prompt: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: TokenCount | None = None
    max_completion_tokens: TokenCount | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0, allow_inf_nan=False)] | None = None
    top_p: Probability | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = 1

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

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if (self.messages is None) == (self.prompt is None):
            raise ValueError("give exactly one of 'messages' or the shorthand 'prompt'")
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        return self

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def to_generation(self, model: str, *, trace_session: str | None = None) -> GenerationRequest:
        if self.messages is not None:
            turns = tuple(ChatTurn(m.role, m.text()) for m in self.messages)
        else:
            turns = (ChatTurn("user", self.prompt or ""),)
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return GenerationRequest(
            model=model,
            messages=turns,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            stop=tuple(s for s in stop if s),
            trace_session=trace_session,
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
        raise InvalidRequest("Only n=1 is supported.", param="n", code="unsupported_value")
    try:
        return ChatCompletionRequest.model_validate(body)
    except ValidationError as exc:
        raise _invalid(exc) from None


def _invalid(exc: ValidationError) -> InvalidRequest:
    first = exc.errors(include_url=False)[0]
    param = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param, code=first["type"])
