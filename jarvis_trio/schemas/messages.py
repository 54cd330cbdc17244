"""OpenAI's chat messages and their parts, validated strictly, and each one as a ChatTurn."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    Field,
    field_validator,
)

from jarvis_trio.generation import ChatTurn, ToolCall
from jarvis_trio.schemas.fields import OPEN, STRICT, ToolName


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class ImageUrl(BaseModel):
    model_config = STRICT
    url: Annotated[str, Field(min_length=1)]
    detail: Literal["auto", "low", "high"] | None = None

    @field_validator("url")
    @classmethod
    def _data_or_http(cls, value: str) -> str:
        if not value.startswith(("data:image/", "http://", "https://")):
            raise ValueError("must be a data:image/... URL or an http(s) URL")
        return value


class ImagePart(BaseModel):
    model_config = STRICT
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalPart(BaseModel):
    model_config = STRICT
    type: Literal["refusal"]
    refusal: str


UserPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]
AssistantPart = Annotated[TextPart | RefusalPart, Field(discriminator="type")]


class FunctionCall(BaseModel):
    model_config = STRICT
    name: ToolName
    arguments: str


class ToolCallModel(BaseModel):
    model_config = OPEN
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
    model_config = OPEN
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


def to_turn(message: SystemMessage | UserMessage | AssistantMessage | ToolMessage) -> ChatTurn:
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
