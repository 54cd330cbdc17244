"""Ollama's ``/api/chat`` protocol, mapped to and from ours. Pure: no I/O.

Shared by every variant that talks to Ollama (the trio server and the asyncio
baseline of the benchmarks), so their comparison is about concurrency only.
"""

from __future__ import annotations

import json
import secrets
from types import MappingProxyType
from typing import Any

from jarvis_trio.errors import InvalidRequest, UpstreamError
from jarvis_trio.generation import (
    Delta,
    FinishReason,
    GenerationRequest,
    ModelInfo,
    Output,
    Piece,
    Usage,
    clean_text,
)

# Ollama has no "developer" role; it is OpenAI's newer name for "system".
_ROLES = {"developer": "system"}

# OpenAI's fields that Ollama has no way to honour: refused by name (a 400), never
# dropped, since each changes what the answer is or how it is shaped.
UNSUPPORTED = {
    "logit_bias": "Ollama has no logit bias",
    "service_tier": "Ollama has no service tiers",
    "modalities": "Ollama answers text only",
    "audio": "Ollama answers text only",
    "prediction": "Ollama has no predicted outputs",
    "web_search_options": "Ollama has no web search",
    "functions": "use 'tools' (the legacy 'functions' field is not mapped)",
    "function_call": "use 'tool_choice' (the legacy 'function_call' field is not mapped)",
}
# Fields with no effect on the answer: accepted, and not sent.
IGNORED = frozenset({"user", "metadata", "store", "n", "stream_options"})
# Ollama's own sampling options, accepted at the top level as vendor extras.
OLLAMA_OPTIONS = frozenset(
    {
        "top_k",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "repeat_last_n",
        "num_ctx",
        "num_keep",
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "tfs_z",
        "penalize_newline",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
    }
)
# OpenAI reasoning effort to Ollama's ``think``.
_THINK = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high"}
_THINK["xhigh"] = "high"


def _unsupported(param: str, why: str) -> InvalidRequest:
    return InvalidRequest(
        f"{param} is not supported by the ollama backend: {why}.",
        param=param,
        code="unsupported_parameter",
    )


def chat_body(request: GenerationRequest, *, stream: bool = True) -> dict[str, Any]:
    """Ollama's ``/api/chat`` body for ``request``; raises :class:`InvalidRequest` (400)
    for a field Ollama cannot honour. The mapping is documented in docs/reference/api.md."""
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
        "messages": _messages(request),
        "stream": stream,
    }
    for key, value in request.options.items():
        _map_field(key, value, request, body, options)
    for key, value in request.ollama_extras.items():  # an Ollama client's own fields
        if key == "options" and isinstance(value, dict):
            options.update(value)
        else:
            body[key] = value
    if options:
        body["options"] = options
    return body


def _map_field(
    key: str,
    value: Any,
    request: GenerationRequest,
    body: dict[str, Any],
    options: dict[str, Any],
) -> None:
    if value is None or key in IGNORED:
        return
    if key in UNSUPPORTED:
        raise _unsupported(key, UNSUPPORTED[key])
    if key in ("max_tokens", "max_completion_tokens", "temperature", "top_p", "seed", "stop"):
        return  # mapped from the typed fields above
    if key in ("frequency_penalty", "presence_penalty") or key in OLLAMA_OPTIONS:
        options[key] = value
    elif key == "options" and isinstance(value, dict):
        options.update(value)
    elif key == "keep_alive":
        body["keep_alive"] = value
    elif key == "tools":
        if request.tools:
            body["tools"] = request.tools
    elif key == "tool_choice":
        if value not in ("auto", "none"):
            raise _unsupported("tool_choice", "it can only let the model choose ('auto')")
    elif key == "parallel_tool_calls":
        if value is False:
            raise _unsupported("parallel_tool_calls", "it cannot limit a turn to one call")
    elif key == "response_format":
        body.update(_format(value))
    elif key == "reasoning_effort":
        body["think"] = _THINK.get(value, True)
    elif key in ("logprobs", "top_logprobs"):
        body[key] = value
    else:
        raise _unsupported(key, "it is not an OpenAI field this gateway maps to Ollama")


def _format(value: Any) -> dict[str, Any]:
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "json_object":
        return {"format": "json"}
    if kind == "json_schema":
        schema = (value.get("json_schema") or {}).get("schema")
        return {"format": schema if isinstance(schema, dict) else "json"}
    return {}


def _messages(request: GenerationRequest) -> list[dict[str, Any]]:
    names = {call.id: call.name for turn in request.messages for call in turn.tool_calls}
    out: list[dict[str, Any]] = []
    for i, turn in enumerate(request.messages):
        message: dict[str, Any] = {
            "role": _ROLES.get(turn.role, turn.role),
            "content": turn.content,
        }
        if turn.images:
            message["images"] = [_inline_image(url, f"messages.{i}.content") for url in turn.images]
        if turn.tool_calls:
            message["tool_calls"] = [
                {"function": {"name": c.name, "arguments": _arguments(c.arguments, i)}}
                for c in turn.tool_calls
            ]
        if turn.role == "tool":
            name = names.get(turn.tool_call_id or "") or turn.name
            if name:
                message["tool_name"] = name
        out.append(message)
    return out


def _inline_image(url: str, param: str) -> str:
    """A ``data:`` URL's base64 payload: Ollama takes images inline only."""
    if not url.startswith("data:"):
        raise InvalidRequest(
            f"{param}: the ollama backend takes images inline only (a data: URL with base64); "
            "the gateway does not fetch image URLs.",
            param=param,
            code="unsupported_parameter",
        )
    head, sep, payload = url.partition(",")
    if not sep or not head.endswith(";base64"):
        raise InvalidRequest(
            f"{param}: an image data: URL must be base64 encoded.",
            param=param,
            code="invalid_image",
        )
    return payload


def _arguments(text: str, index: int) -> Any:
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        raise InvalidRequest(
            f"messages.{index}.tool_calls: arguments must be JSON (Ollama takes an object).",
            param=f"messages.{index}.tool_calls",
            code="invalid_value",
        ) from None


class ChatLines:
    """Parses one ``/api/chat`` answer, line by line (tool calls are numbered across it)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, line: str | bytes) -> Piece | None:
        """A line of the answer; ``None`` for a blank line. Raises :class:`UpstreamError`."""
        if not line.strip():
            return None
        try:
            data = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _malformed() from None
        if not isinstance(data, dict):
            raise _malformed()
        if "error" in data:
            raise UpstreamError(f"The model server failed: {data['error']}", code="upstream_error")
        message = data.get("message") or {}
        if not isinstance(message, dict):
            raise _malformed()
        content = message.get("content", "") or ""
        if not isinstance(content, str):
            raise _malformed()
        content = clean_text(content)
        fields: dict[str, Any] = {}
        thinking = message.get("thinking")
        if isinstance(thinking, str) and thinking:
            fields["reasoning_content"] = clean_text(thinking)
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            fields["tool_calls"] = [self._call(call) for call in calls]
        logprobs = data.get("logprobs")
        output: Output = content
        if fields or isinstance(logprobs, list):
            output = Delta(
                content,
                fields=fields,
                logprobs={"content": logprobs} if isinstance(logprobs, list) else None,
            )
        model = data.get("model") if isinstance(data.get("model"), str) else None
        if not data.get("done"):
            return Piece(output, model=model)
        reason: FinishReason = "length" if data.get("done_reason") == "length" else "stop"
        if reason == "stop" and self.calls:
            reason = "tool_calls"  # Ollama says "stop" after its tool calls; OpenAI does not
        usage = Usage(
            prompt_tokens=_count(data.get("prompt_eval_count")),
            completion_tokens=_count(data.get("eval_count")),
        )
        return Piece(output, finish_reason=reason, usage=usage, end=True, model=model)

    def _call(self, call: Any) -> dict[str, Any]:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _malformed()
        arguments = function.get("arguments")
        index = self.calls
        self.calls += 1
        return {
            "index": index,
            "id": call.get("id") or "call_" + secrets.token_hex(12),
            "type": "function",
            "function": {
                "name": function["name"],
                "arguments": arguments
                if isinstance(arguments, str)
                else json.dumps(arguments if arguments is not None else {}),
            },
        }


def parse_chat_line(line: str | bytes) -> Piece | None:
    """One line of an answer, parsed on its own (see :class:`ChatLines`)."""
    return ChatLines()(line)


def _malformed() -> UpstreamError:
    return UpstreamError("The model server sent a malformed line.", code="upstream_malformed")


def _count(value: object) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def models_from_tags(body: Any) -> list[ModelInfo]:
    models = body.get("models") if isinstance(body, dict) else None
    if not isinstance(models, list):
        raise UpstreamError("The model server sent a malformed model list.")
    return [
        ModelInfo(
            id=str(m.get("name") or m.get("model")), owned_by="ollama", listing=MappingProxyType(m)
        )
        for m in models
        if isinstance(m, dict) and (m.get("name") or m.get("model"))
    ]
