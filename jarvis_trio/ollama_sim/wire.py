"""What every part of the simulator writes the same way: JSON bodies, content types, errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

JSON_TYPE = "application/json; charset=utf-8"
NDJSON_TYPE = "application/x-ndjson"
TEXT_TYPE = "text/plain; charset=utf-8"


class HttpError(Exception):
    """A request the simulator refuses: the status and the ``error`` message it answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.model: str | None = None  # for the record, once known


def dumps(obj: Any) -> bytes:
    """Compact JSON, as Ollama writes it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def created_at() -> str:
    """Now, in the ``created_at`` format of Ollama's answers."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
