"""Ollama's ``messages`` and ``tools``, and the conversation they make. Pure: no I/O.

A message's ``images`` (base64) become ``data:`` image URLs, its ``tool_calls``
(arguments as an object) OpenAI's calls with ids (``call_<message>_<n>`` when the
client gave none), and a ``tool`` message's ``tool_name`` the id of the call it
answers. :func:`conversation` gives both the gateway's turns and OpenAI's messages
(for an OpenAI-compatible upstream).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, field_validator

from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import ChatTurn, ToolCall
from jarvis_trio.schemas.fields import OPEN as _OPEN
from jarvis_trio.schemas.fields import STRICT as _STRICT
from jarvis_trio.schemas.fields import ToolName

_IMAGE_TYPES = (
    (b"\x89PNG", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
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
        check_images(value)
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


def check_images(images: list[str] | None) -> None:
    """Raise ``ValueError`` (for a pydantic validator) naming the first image that is
    not valid base64."""
    for index, image in enumerate(images or ()):
        try:
            base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"image {index} is not valid base64") from None


def image_url(data: str) -> str:
    """A base64 image as a ``data:`` URL, its type read from its first bytes."""
    head = base64.b64decode(data[:16] + "=" * (-len(data[:16]) % 4), validate=False)
    kind = next((t for magic, t in _IMAGE_TYPES if head.startswith(magic)), None)
    if kind is None:
        kind = "image/webp" if head[:4] == b"RIFF" and head[8:12] == b"WEBP" else "image/png"
    return f"data:{kind};base64,{data}"


def conversation(
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
        turn = ChatTurn(
            message.role,
            message.content,
            images=images,
            tool_calls=calls,
            tool_call_id=call_id,
            name=message.tool_name,
        )
        turns.append(turn)
        raw.append(turn.as_openai())
    return tuple(turns), tuple(raw)


def _answered(pending: list[tuple[str, str]], name: str | None) -> str | None:
    """The id of the call a tool result answers: the oldest open call of its name (of
    any name when the result names none), which is then no longer open."""
    for k, (call_id, call_name) in enumerate(pending):
        if name is None or call_name == name:
            del pending[k]
            return call_id
    return None
