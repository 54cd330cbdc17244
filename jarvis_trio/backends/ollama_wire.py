"""Ollama's ``/api/chat`` protocol, mapped to and from ours. Pure: no I/O.

Shared by every variant that talks to Ollama (the trio server and the asyncio
baseline of the benchmarks), so their comparison is about concurrency only.
"""

from __future__ import annotations

import json
from typing import Any

from jarvis_trio.backends.base import (
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Piece,
    Usage,
    clean_text,
)
from jarvis_trio.errors import UpstreamError

# Ollama has no "developer" role; it is OpenAI's newer name for "system".
_ROLES = {"developer": "system"}


def chat_body(request: GenerationRequest, *, stream: bool = True) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop:
        options["stop"] = list(request.stop)
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [
            {"role": _ROLES.get(turn.role, turn.role), "content": turn.content}
            for turn in request.messages
        ],
        "stream": stream,
    }
    if options:
        body["options"] = options
    return body


def parse_chat_line(line: str | bytes) -> Piece | None:
    """A line of the answer; ``None`` for a blank line. Raises :class:`UpstreamError`."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UpstreamError(
            "The model server sent a malformed line.", code="upstream_malformed"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamError("The model server sent a malformed line.", code="upstream_malformed")
    if "error" in data:
        raise UpstreamError(f"The model server failed: {data['error']}", code="upstream_error")
    message = data.get("message") or {}
    content = message.get("content", "") if isinstance(message, dict) else ""
    if not isinstance(content, str):
        raise UpstreamError("The model server sent a malformed line.", code="upstream_malformed")
    content = clean_text(content)
    if not data.get("done"):
        return Piece(content)
    reason: FinishReason = "length" if data.get("done_reason") == "length" else "stop"
    usage = Usage(
        prompt_tokens=_count(data.get("prompt_eval_count")),
        completion_tokens=_count(data.get("eval_count")),
    )
    return Piece(content, finish_reason=reason, usage=usage, end=True)


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def models_from_tags(body: Any) -> list[ModelInfo]:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise UpstreamError("The model server sent a malformed model list.")
    return [
        ModelInfo(id=str(m.get("name") or m.get("model")), owned_by="ollama")
        for m in models
        if isinstance(m, dict) and (m.get("name") or m.get("model"))
    ]


def normalize_ollama_url(value: str) -> str:
    """``OLLAMA_HOST`` may be ``host``, ``host:port`` or a URL; ``0.0.0.0`` means here.

    The default port follows Ollama's own parsing: 11434 without a scheme,
    else the scheme's (80 for http, 443 for https).
    """
    url = value.strip().rstrip("/")
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest, default_port = "http", url, "11434"
    else:
        default_port = "443" if scheme == "https" else "80"
    host, _, tail = rest.partition("/")
    if host.startswith("0.0.0.0"):
        host = "127.0.0.1" + host.removeprefix("0.0.0.0")
    if ":" not in host.rsplit("]", 1)[-1]:
        host += ":" + default_port
    return f"{scheme}://{host}" + (f"/{tail}" if tail else "")
