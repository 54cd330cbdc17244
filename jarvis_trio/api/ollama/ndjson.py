"""Ollama's answer format: NDJSON chunks, the final ``done`` object, the whole answer.

Pure functions of their inputs (the clock and the durations are passed in); the
routes only write what they return.

A chunk is ``{"model", "created_at", "message": {"role": "assistant", "content"},
"done": false}`` for ``/api/chat`` (``"response"`` instead of ``"message"`` for
``/api/generate``); reasoning goes in ``thinking``, log probabilities in
``logprobs``. Tool calls are sent whole, as Ollama sends them: an OpenAI-compatible
upstream streams a call's arguments in fragments, so calls are gathered and written
in one chunk, ``arguments`` as an object, before the final object.

The final object has ``"done": true``, a ``done_reason`` and the counts and
durations (nanoseconds). ``done_reason`` is Ollama's ``stop`` or ``length`` for an
answer that completed (a turn that ends in tool calls is ``stop``, as in Ollama),
and says why for one that was cut: ``superseded``, ``stopped``, ``shutdown``,
``disconnected``. A failure is Ollama's error line, ``{"error": "..."}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from jarvis_trio.errors import ApiError, UpstreamError
from jarvis_trio.generation import Delta, Output, Usage
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.wire import assemble

Kind = Literal["chat", "generate"]
NDJSON_TYPE = "application/x-ndjson"

# Delta fields that are the model's reasoning (vLLM, llama.cpp and others' names).
_THINKING_FIELDS = ("reasoning_content", "reasoning")


def created_at(now: datetime | None = None) -> str:
    """Ollama's timestamp: RFC 3339 in UTC."""
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def line(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n"


@dataclass(frozen=True, slots=True)
class Durations:
    """The final object's durations, in seconds (written as nanoseconds).

    ``total``: submitted to the end; ``load``: submitted to started (the wait for
    the session's turn, a superseded stream's join included); ``prompt_eval``:
    started to the first piece; ``eval``: the first piece to the end.
    """

    total: float = 0.0
    load: float = 0.0
    prompt_eval: float = 0.0
    eval: float = 0.0


def done_reason(ending: Ending) -> str:
    """Why an answer ended, in ``done_reason``: Ollama's, or the gateway's reason."""
    if ending.outcome is Outcome.COMPLETED:
        return "length" if ending.finish_reason == "length" else "stop"
    return ending.outcome.value


class Writer:
    """Writes one answer; keeps the tool calls it has seen until the end."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.model = model
        self._calls: list[Delta] = []
        # Pieces written so far: a cut answer's eval_count is what its client got.
        self.delivered = 0

    def _object(self, content: str, done: bool, **fields: Any) -> dict[str, Any]:
        obj: dict[str, Any] = {"model": self.model, "created_at": created_at()}
        message = {k: v for k, v in fields.items() if k in ("thinking", "tool_calls")}
        if self.kind == "chat":
            obj["message"] = {"role": "assistant", "content": content, **message}
        else:
            obj["response"] = content
            obj.update(message)
        obj["done"] = done
        if fields.get("logprobs"):
            obj["logprobs"] = fields["logprobs"]
        return obj

    def chunk(self, piece: Output) -> dict[str, Any] | None:
        """The chunk of one piece (None: nothing to send now, e.g. a tool call part)."""
        if isinstance(piece, str):
            return self._object(piece, False) if piece else None
        fields: dict[str, Any] = {}
        thinking = "".join(v for k in _THINKING_FIELDS if isinstance(v := piece.fields.get(k), str))
        if thinking:
            fields["thinking"] = thinking
        self._gather(piece)
        logprobs = (piece.logprobs or {}).get("content")
        if isinstance(logprobs, list) and logprobs:
            fields["logprobs"] = logprobs
        content = piece.content
        refusal = piece.fields.get("refusal")
        if isinstance(refusal, str):
            content += refusal  # Ollama has no refusal field: it is what the model said
        if not (content or fields):
            return None
        return self._object(content, False, **fields)

    def _gather(self, piece: Output) -> None:
        if isinstance(piece, Delta) and piece.fields.get("tool_calls"):
            self._calls.append(Delta(fields={"tool_calls": piece.fields["tool_calls"]}))

    def lines(self, pieces: Iterable[Output]) -> str:
        """The NDJSON lines of a batch of pieces."""
        pieces = list(pieces)
        self.delivered += len(pieces)
        return "".join(line(c) for p in pieces if (c := self.chunk(p)) is not None)

    def tool_calls(self) -> list[dict[str, Any]]:
        """The calls gathered so far, in Ollama's shape; raises :class:`UpstreamError`
        when a call's arguments are not a JSON object (Ollama's must be)."""
        message, _ = assemble(self._calls)
        return [_ollama_call(call, i) for i, call in enumerate(message.get("tool_calls") or [])]

    def final(
        self, ending: Ending, *, produced: int, durations: Durations, **message: Any
    ) -> dict[str, Any]:
        """The ``done`` object (raises the ending's error when it failed).

        ``eval_count`` is the backend's count for a completed answer; for a cut one,
        the ``produced`` pieces its client got (``prompt_eval_count`` 0)."""
        if ending.error is not None:
            raise ending.error
        usage = ending.usage if ending.outcome is Outcome.COMPLETED else None
        usage = usage or Usage(0, produced)
        obj = self._object(message.pop("content", ""), True, **message)
        obj["done_reason"] = done_reason(ending)
        obj.update(
            total_duration=_ns(durations.total),
            load_duration=_ns(durations.load),
            prompt_eval_count=usage.prompt_tokens,
            prompt_eval_duration=_ns(durations.prompt_eval),
            eval_count=usage.completion_tokens,
            eval_duration=_ns(durations.eval),
        )
        return obj

    def ending_lines(self, ending: Ending, *, durations: Durations) -> str:
        """A stream's last lines: the gathered tool calls, then the final object; or
        Ollama's error line for a stream that failed."""
        try:
            calls = self.tool_calls()
            head = line(self._object("", False, tool_calls=calls)) if calls else ""
            return head + line(self.final(ending, produced=self.delivered, durations=durations))
        except ApiError as error:
            return line(error_body(error))

    def whole(
        self, pieces: Iterable[Output], ending: Ending, *, durations: Durations
    ) -> dict[str, Any]:
        """A non-streaming answer: every piece in one ``done`` object."""
        pieces = list(pieces)
        for piece in pieces:
            self._gather(piece)
        message, logprobs = assemble(pieces)
        fields: dict[str, Any] = {
            "content": (message.get("content") or "") + (message.get("refusal") or "")
        }
        thinking = "".join(v for k in _THINKING_FIELDS if isinstance(v := message.get(k), str))
        if thinking:
            fields["thinking"] = thinking
        if calls := self.tool_calls():
            fields["tool_calls"] = calls
        if logprobs and isinstance(logprobs.get("content"), list):
            fields["logprobs"] = logprobs["content"]
        return self.final(ending, produced=len(pieces), durations=durations, **fields)

    def load(self, reason: Literal["load", "unload"]) -> dict[str, Any]:
        """Ollama's answer to an empty request: the model is (un)loaded, nothing said."""
        obj = self._object("", True)
        obj["done_reason"] = reason
        return obj


def error_body(error: ApiError) -> dict[str, Any]:
    """Ollama's error shape: ``{"error": "..."}``."""
    return {"error": error.message}


def _ns(seconds: float) -> int:
    return max(0, round(seconds * 1e9))


def _ollama_call(call: dict[str, Any], index: int) -> dict[str, Any]:
    function = call.get("function") or {}
    text = function.get("arguments") or ""
    try:
        arguments = json.loads(text) if text.strip() else {}
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        raise UpstreamError(
            f"The model called {function.get('name')!r} with arguments that are not a JSON "
            "object; Ollama's tool calls need one.",
            code="upstream_malformed",
        )
    out: dict[str, Any] = {
        "function": {"index": index, "name": function.get("name") or "", "arguments": arguments}
    }
    if call.get("id"):
        out["id"] = call["id"]
    return out
