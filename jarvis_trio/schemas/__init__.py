"""Request bodies, validated strictly: every bad field is a 400 that names it.

:mod:`~jarvis_trio.schemas.chat` is OpenAI's chat request,
:mod:`~jarvis_trio.schemas.messages` its messages, and
:mod:`~jarvis_trio.schemas.fields` what every schema shares (field types, ids,
pydantic's errors as :class:`~jarvis_trio.errors.InvalidRequest`).
"""

from jarvis_trio.schemas.chat import GATEWAY_FIELDS, ChatCompletionRequest, parse_chat_request
from jarvis_trio.schemas.fields import (
    ID_PATTERN,
    FieldError,
    check_id,
    parse_json_object,
    parse_resume_seconds,
)

__all__ = [
    "GATEWAY_FIELDS",
    "ID_PATTERN",
    "ChatCompletionRequest",
    "FieldError",
    "check_id",
    "parse_chat_request",
    "parse_json_object",
    "parse_resume_seconds",
]
