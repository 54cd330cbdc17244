"""OpenAI's wire format: chat.completion bodies and chat.completion.chunk SSE events.

Pure functions of their inputs; the HTTP edge only writes what they return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from jarvis_trio.backends.base import Usage
from jarvis_trio.outcomes import Ending, Outcome

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    return "data: " + json.dumps(payload, separators=(",", ":"), ensure_ascii=False) + "\n\n"


def event_id(stream_id: str, seq: int) -> str:
    """The SSE id of a stream's event ``seq`` (0: the role chunk; n: the n-th piece).

    A client resumes with ``Last-Event-ID`` (see :func:`jarvis_trio.replay.parse_last_event_id`).
    """
    return f"{stream_id}:{seq}"


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
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

    def finish(self, finish_reason: str, outcome: str | None = None) -> str:
        """The last choice chunk. ``outcome`` names an early end (``superseded``, ...)."""
        extra = {"jarvis": {"outcome": outcome}} if outcome else {}
        return sse(self._chunk([self._choice({}, finish_reason)], **extra))

    def usage(self, usage: Usage) -> str:
        chunk = self._chunk([])
        chunk["usage"] = usage_dict(usage)
        return sse(chunk)


def completion(
    *,
    stream_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str,
    usage: Usage,
) -> dict[str, Any]:
    return {
        "id": stream_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": usage_dict(usage),
    }


def completion_for(
    *, stream_id: str, model: str, created: int, text: str, ending: Ending
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
        text=text,
        finish_reason=ending.finish_reason or "stop",
        usage=ending.usage,
    )


def stream_ending(fmt: ChunkFormat, ending: Ending) -> str:
    """The last events of a stream, ``[DONE]`` included.

    Completed: the finish chunk (and the usage chunk when asked for). Ended on
    purpose (superseded, stopped, shutdown): a finish chunk whose
    ``finish_reason`` and ``jarvis.outcome`` name why, which OpenAI clients
    read without error. Failed: an OpenAI error event.
    """
    if ending.outcome is Outcome.COMPLETED:
        out = fmt.finish(ending.finish_reason or "stop")
        if fmt.include_usage and ending.usage is not None:
            out += fmt.usage(ending.usage)
        return out + DONE
    error = ending.error
    if error is None:
        reason = ending.finish_reason or ending.outcome.value
        return fmt.finish(reason, outcome=ending.outcome.value) + DONE
    return sse(error.body()) + DONE
