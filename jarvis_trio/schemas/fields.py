"""What every request schema shares: field types, id checks, and pydantic's errors as 400s."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError

from jarvis_trio.errors import InvalidRequest

STRICT = ConfigDict(strict=True, extra="ignore", frozen=True)
# Messages and the body keep what they do not name: an OpenAI-compatible upstream
# gets it as sent (vendor extras such as vLLM's ``top_k``).
OPEN = ConfigDict(strict=True, extra="allow", frozen=True)

Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
TokenCount = Annotated[int, Field(ge=1, le=1_000_000)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0, allow_inf_nan=False)]
ToolName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


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


def param_of(loc: tuple[int | str, ...]) -> str | None:
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


def invalid_request(exc: ValidationError) -> InvalidRequest:
    errors = exc.errors(include_url=False)
    # For a union (content: a string or a list of parts) pydantic reports each member's
    # failure; the one that got deepest into the value says what is really wrong.
    first = max(errors, key=lambda e: len(param_of(e["loc"]) or ""))
    first = next(e for e in errors if param_of(e["loc"]) == param_of(first["loc"]))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, FieldError):
        return InvalidRequest(f"{cause.param}: {cause}", param=cause.param, code=cause.code)
    param = param_of(first["loc"])
    if first["type"] in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((first.get("ctx") or {}).get("discriminator", "")).strip("'")
        param = f"{param}.{tag}" if param else tag
    message = first["msg"].removeprefix("Value error, ")
    if param:
        message = f"{param}: {message}"
    return InvalidRequest(message, param=param, code=first["type"])
