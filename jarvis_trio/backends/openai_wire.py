"""An OpenAI-compatible upstream's chat protocol (vLLM, llama.cpp server, LM Studio). Pure."""

from __future__ import annotations

import json
from typing import Any, cast

from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import (
    FINISH_REASONS,
    Delta,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Output,
    Piece,
    Usage,
    clean_text,
)


def chat_body(request: GenerationRequest) -> dict[str, Any]:
    """The upstream's body: what the client sent, unchanged, vendor extras included.

    The gateway owns ``model`` (the default filled in), ``stream`` (always on
    upstream: a non-streaming answer is assembled from the stream, so a cancel
    can cut it too) and ``stream_options`` (usage always asked for).
    """
    body: dict[str, Any] = {"model": request.model}
    if request.raw_messages:
        body["messages"] = list(request.raw_messages)
        body.update(request.options)
    else:  # built in code, not from a client's body: the typed fields only
        body["messages"] = [t.as_openai() for t in request.messages]
        optional = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
            "stop": list(request.stop) or None,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


# A chunk's keys in OpenAI's own format; any other top-level key is the upstream's
# own (llama.cpp's ``timings``...) and is relayed as it came.
_CHUNK_KEYS = frozenset(
    ("id", "object", "created", "model", "system_fingerprint", "choices", "usage")
)
_USAGE_KEYS = frozenset(("prompt_tokens", "completion_tokens", "total_tokens"))


def parse_sse_line(line: str) -> Piece | None:
    """One line of the SSE answer; ``None`` for anything that is not a data line.

    A delta with only text becomes a plain ``str``; anything more (tool calls,
    reasoning, refusal, logprobs, the upstream's own keys) a :class:`Delta`
    that keeps every field as the upstream sent it.
    """
    if not line.startswith("data:"):
        return None
    data = line.removeprefix("data:").strip()
    if data == "[DONE]":
        return Piece(end=True)
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError:
        raise _malformed("event") from None
    if not isinstance(chunk, dict):
        raise _malformed("event")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise UpstreamError(f"The model server failed: {message}", code="upstream_error")
    usage = _usage(chunk.get("usage"))
    model = chunk.get("model") if isinstance(chunk.get("model"), str) else None
    extra = {k: v for k, v in chunk.items() if k not in _CHUNK_KEYS}
    choices = chunk.get("choices") or []
    if not isinstance(choices, list):
        raise _malformed("event")
    choice = choices[0] if choices else None
    if choice is None:
        return Piece(usage=usage, model=model, extra=extra)
    if not isinstance(choice, dict):
        raise _malformed("event")
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        raise _malformed("event")
    content = delta.get("content") or ""
    if not isinstance(content, str):
        raise _malformed("event")
    content = clean_text(content)
    fields = {k: v for k, v in delta.items() if k not in ("content", "role") and v is not None}
    logprobs = choice.get("logprobs")
    reason = choice.get("finish_reason")
    finish: FinishReason | None = None
    if reason is not None:
        finish = cast(FinishReason, reason) if reason in FINISH_REASONS else "stop"
    output: Output
    if fields or logprobs is not None or (extra and finish is None):
        output = Delta(
            content,
            fields=fields,
            logprobs=logprobs if isinstance(logprobs, dict) else None,
            extra=extra if finish is None else {},
        )
    else:
        output = content
    return Piece(
        output=output,
        finish_reason=finish,
        usage=usage,
        model=model,
        extra=extra if finish is not None or not choices else {},
    )


def _usage(value: object) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens") or 0, value.get("completion_tokens") or 0
    if not (isinstance(prompt, int) and isinstance(completion, int)):
        raise UpstreamError("The model server sent malformed usage.", code="upstream_malformed")
    return Usage(prompt, completion, {k: v for k, v in value.items() if k not in _USAGE_KEYS})


def _malformed(what: str) -> UpstreamError:
    return UpstreamError(f"The model server sent a malformed {what}.", code="upstream_malformed")


def models_from_list(body: Any) -> list[ModelInfo]:
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise UpstreamError("The model server sent a malformed model list.")
    return [
        ModelInfo(id=str(m["id"]), owned_by=str(m.get("owned_by") or "upstream"))
        for m in data
        if isinstance(m, dict) and m.get("id")
    ]
