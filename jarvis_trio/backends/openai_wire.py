"""An OpenAI-compatible upstream's chat protocol (vLLM, llama.cpp server, LM Studio). Pure."""

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


def chat_body(request: GenerationRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": t.role, "content": t.content} for t in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    optional = {
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "stop": list(request.stop) or None,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    return body


def parse_sse_line(line: str) -> Piece | None:
    """One line of the SSE answer; ``None`` for anything that is not a data line."""
    if not line.startswith("data:"):
        return None
    data = line.removeprefix("data:").strip()
    if data == "[DONE]":
        return Piece(end=True)
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise UpstreamError(
            "The model server sent a malformed event.", code="upstream_malformed"
        ) from None
    if not isinstance(chunk, dict):
        raise UpstreamError("The model server sent a malformed event.", code="upstream_malformed")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"The model server failed: {message}", code="upstream_error")
    usage = None
    if isinstance(chunk.get("usage"), dict):
        u = chunk["usage"]
        prompt, completion = u.get("prompt_tokens") or 0, u.get("completion_tokens") or 0
        if not (isinstance(prompt, int) and isinstance(completion, int)):
            raise UpstreamError("The model server sent malformed usage.", code="upstream_malformed")
        usage = Usage(prompt, completion)
    content = ""
    finish: FinishReason | None = None
    choices = chunk.get("choices") or []
    if choices and isinstance(choices[0], dict):
        delta = choices[0].get("delta") or {}
        content = delta.get("content") or "" if isinstance(delta, dict) else ""
        if not isinstance(content, str):
            raise UpstreamError(
                "The model server sent a malformed event.", code="upstream_malformed"
            )
        reason = choices[0].get("finish_reason")
        if reason is not None:
            finish = "length" if reason == "length" else "stop"
    return Piece(content=clean_text(content), finish_reason=finish, usage=usage)


def models_from_list(body: Any) -> list[ModelInfo]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise UpstreamError("The model server sent a malformed model list.")
    return [
        ModelInfo(id=str(m["id"]), owned_by=str(m.get("owned_by") or "upstream"))
        for m in data
        if isinstance(m, dict) and m.get("id")
    ]
