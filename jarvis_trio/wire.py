"""OpenAI's wire format: chat.completion bodies and chat.completion.chunk SSE events.

Pure functions of their inputs; the HTTP edge only writes what they return.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jarvis_trio.generation import Output, Usage
from jarvis_trio.outcomes import Ending, Outcome

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return "data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n\n"


def event_id(stream_id: str, seq: int) -> str:
    """The SSE id of a stream's event ``seq`` (0: the role chunk; n: the n-th piece).

    A client resumes with ``Last-Event-ID`` (see :func:`jarvis_trio.replay.parse_last_event_id`).
    """
    return f"{stream_id}:{seq}"


def usage_dict(usage: Usage) -> dict[str, Any]:
    return {
        **usage.extra,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


# Stands for the content in a chunk's template; JSON escapes it, so no text can forge it.
_MARKER = "\x00content\x00"


@dataclass(frozen=True)
class ChunkFormat:
    """Builds the chunks of one stream; every chunk carries the same ``id``."""

    stream_id: str
    model: str
    created: int
    include_usage: bool = False
    # A cut stream's finish_reason names why ("superseded"...) instead of OpenAI's "stop".
    extended_finish_reasons: bool = False

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.stream_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        chunk.update(extra)
        return chunk

    def _choice(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def role(self, **extra: Any) -> str:
        chunk = self._chunk([self._choice({"role": "assistant", "content": ""}, None)], **extra)
        return f"id: {event_id(self.stream_id, 0)}\n" + sse(chunk)

    @cached_property
    def _content_around(self) -> tuple[str, str]:
        """A content chunk's text before and after its JSON-encoded ``content``.

        Built once per stream: the hot path then encodes only the piece itself.
        """
        data = sse(self._chunk([self._choice({"content": _MARKER}, None)]))
        # The last one: a model name may hold the marker too, but nothing after the content.
        before, after = data.rsplit(json.dumps(_MARKER), 1)
        return before, after

    def content(self, text: str, seq: int | None = None) -> str:
        """A content chunk; with ``seq``, preceded by its SSE ``id:`` line."""
        before, after = self._content_around
        data = before + json.dumps(text, ensure_ascii=False) + after
        return data if seq is None else f"id: {event_id(self.stream_id, seq)}\n{data}"

    def piece(self, piece: Output, seq: int | None = None) -> str:
        """The chunk of one piece of output: text, or a richer :class:`Delta`."""
        if isinstance(piece, str):
            return self.content(piece, seq)
        delta: dict[str, Any] = {"content": piece.content} if piece.content else {}
        delta.update(piece.fields)
        choice = self._choice(delta, None)
        choice["logprobs"] = piece.logprobs
        chunk = self._chunk([choice])
        for key, value in piece.extra.items():
            chunk.setdefault(key, value)
        data = sse(chunk)
        return data if seq is None else f"id: {event_id(self.stream_id, seq)}\n{data}"

    def finish(
        self,
        finish_reason: str,
        outcome: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str:
        """The last choice chunk. ``outcome`` names an early end (``superseded``, ...)."""
        chunk = self._chunk([self._choice({}, finish_reason)])
        for key, value in (extra or {}).items():
            chunk.setdefault(key, value)
        if outcome:
            chunk["jarvis"] = {"outcome": outcome}
        return sse(chunk)

    def usage(self, usage: Usage) -> str:
        chunk = self._chunk([])
        chunk["usage"] = usage_dict(usage)
        return sse(chunk)


def assemble(pieces: Iterable[Output]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A whole answer's ``message`` and ``logprobs`` from its streamed pieces.

    As a client that reads the stream would: text is joined, ``tool_calls``
    deltas are merged by ``index`` (their ``arguments`` joined), other text
    fields (``reasoning_content``, ``refusal``...) joined, and log probabilities
    concatenated.
    """
    content: list[str] = []
    fields: dict[str, Any] = {}
    calls: dict[int, dict[str, Any]] = {}
    logprobs: dict[str, Any] | None = None
    for piece in pieces:
        if isinstance(piece, str):
            content.append(piece)
            continue
        content.append(piece.content)
        for key, value in piece.fields.items():
            if key == "tool_calls" and isinstance(value, list):
                _merge_tool_calls(calls, value)
            elif isinstance(value, str) and isinstance(fields.get(key), str):
                fields[key] += value
            elif value is not None:
                fields[key] = value
        if piece.logprobs is not None:
            logprobs = logprobs or {}
            for key, value in piece.logprobs.items():
                if isinstance(value, list):
                    logprobs.setdefault(key, []).extend(value)
                else:
                    logprobs[key] = value
    fields.pop("role", None)
    text = "".join(content)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": fields.pop("refusal", None),
        **fields,
    }
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    return message, logprobs


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[Any]) -> None:
    for delta in deltas:
        if not isinstance(delta, dict):
            continue
        index = delta.get("index")
        if not isinstance(index, int):
            # Some servers omit the index: a fragment continues the last call unless it
            # brings an id of its own, which starts the next one.
            last = max(calls, default=-1)
            new_call = last < 0 or (delta.get("id") and delta["id"] != calls[last]["id"])
            index = last + 1 if new_call else last
        call = calls.setdefault(
            index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
        )
        for key in ("id", "type"):
            if delta.get(key):
                call[key] = delta[key]
        function = delta.get("function")
        if isinstance(function, dict):
            if function.get("name"):
                call["function"]["name"] = function["name"]
            if isinstance(function.get("arguments"), str):
                call["function"]["arguments"] += function["arguments"]


def completion(
    *,
    stream_id: str,
    model: str,
    created: int,
    pieces: Iterable[Output],
    finish_reason: str,
    usage: Usage,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    message, logprobs = assemble(pieces)
    body: dict[str, Any] = {
        "id": stream_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": logprobs,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_dict(usage),
    }
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return body


def completion_for(
    *, stream_id: str, model: str, created: int, pieces: Iterable[Output], ending: Ending
) -> dict[str, Any]:
    """A non-streaming answer: the ``chat.completion`` body, or raises the ending's error."""
    error = ending.as_error()
    if error is not None:
        raise error
    assert ending.usage is not None, "a completed ending carries its usage"
    return completion(
        stream_id=stream_id,
        model=model,
        created=created,
        pieces=pieces,
        finish_reason=ending.finish_reason or "stop",
        usage=ending.usage,
        extra=ending.extra,
    )


def stream_ending(fmt: ChunkFormat, ending: Ending, produced: int = 0) -> str:
    """The last events of a stream, ``[DONE]`` included.

    Completed: the finish chunk. Ended on purpose (superseded, stopped,
    shutdown...): a finish chunk with OpenAI's ``finish_reason: "stop"``, which
    every client parses, and the reason in ``jarvis.outcome`` (with
    ``extended_finish_reasons``, in ``finish_reason`` too). Failed: an OpenAI
    error event. With ``include_usage``, every ending sends the usage chunk:
    what the upstream reported, else the ``produced`` pieces as completion tokens.
    """
    usage = ending.usage or Usage(0, produced)
    tail = (fmt.usage(usage) if fmt.include_usage else "") + DONE
    if ending.outcome is Outcome.COMPLETED:
        return fmt.finish(ending.finish_reason or "stop", extra=ending.extra) + tail
    error = ending.error
    if error is None:
        outcome = ending.outcome.value
        reason = outcome if fmt.extended_finish_reasons else "stop"
        return fmt.finish(reason, outcome=outcome) + tail
    return (fmt.usage(usage) if fmt.include_usage else "") + sse(error.body()) + DONE
