"""OpenAI's wire format, as pure functions."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from jarvis_trio.errors import UpstreamTimeout
from jarvis_trio.generation import Delta, Usage
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.rules import CancelReason
from jarvis_trio.wire import (
    DONE,
    ChunkFormat,
    assemble,
    completion,
    event_id,
    sse,
    stream_ending,
)

FMT = ChunkFormat("chatcmpl-1", "m", 1700000000)


def events(text: str) -> list[Any]:
    out: list[Any] = []
    for block in text.split("\n\n"):
        if block:
            if block.startswith("id: "):  # an SSE event id precedes its data line
                block = block.split("\n", 1)[1]
            assert block.startswith("data: ")
            data = block.removeprefix("data: ")
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_sse_is_one_compact_data_line() -> None:
    assert sse({"a": "é"}) == 'data: {"a":"é"}\n\n'


def test_role_then_content_chunks_share_the_id() -> None:
    role, content = events(FMT.role())[0], events(FMT.content("hi"))[0]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert content["choices"][0]["delta"] == {"content": "hi"}
    assert role["id"] == content["id"] == "chatcmpl-1"
    assert "usage" not in role  # only present when the client asked for usage


def test_completed_ending_with_usage() -> None:
    fmt = ChunkFormat("chatcmpl-1", "m", 1, include_usage=True)
    out = events(stream_ending(fmt, Ending(Outcome.COMPLETED, "length", Usage(3, 4))))
    assert out[0]["choices"][0]["finish_reason"] == "length"
    assert out[0]["usage"] is None
    assert out[1]["choices"] == []
    assert out[1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert out[2] == "[DONE]"


def test_cancelled_endings_finish_as_stop_and_say_why_in_the_extra_field() -> None:
    for reason in (CancelReason.SUPERSEDED, CancelReason.STOPPED, CancelReason.SHUTDOWN):
        out = events(stream_ending(FMT, Ending.cancelled(reason)))
        assert out[0]["choices"][0]["finish_reason"] == "stop"  # in every client's enum
        assert out[0]["jarvis"] == {"outcome": reason.value}
        assert out[1] == "[DONE]"


def test_extended_finish_reasons_name_the_cancel_in_finish_reason() -> None:
    fmt = ChunkFormat("chatcmpl-1", "m", 1, extended_finish_reasons=True)
    for reason in (CancelReason.SUPERSEDED, CancelReason.STOPPED, CancelReason.SHUTDOWN):
        out = events(stream_ending(fmt, Ending.cancelled(reason)))
        assert out[0]["choices"][0]["finish_reason"] == reason.value
        assert out[0]["jarvis"] == {"outcome": reason.value}


def test_every_ending_sends_usage_when_asked() -> None:
    fmt = ChunkFormat("chatcmpl-1", "m", 1, include_usage=True)
    cut = events(stream_ending(fmt, Ending.cancelled(CancelReason.STOPPED, Usage(0, 5))))
    assert cut[1]["usage"] == {"prompt_tokens": 0, "completion_tokens": 5, "total_tokens": 5}
    error = UpstreamTimeout("No output.", code="inactivity_timeout")
    failed = events(stream_ending(fmt, Ending(Outcome.INACTIVITY, error=error), produced=7))
    assert failed[0]["usage"]["completion_tokens"] == 7
    assert failed[1]["error"]["code"] == "inactivity_timeout"
    assert failed[2] == "[DONE]"


def test_a_delta_keeps_every_field_the_upstream_sent() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    piece = Delta(
        "x",
        fields={"tool_calls": [call], "reasoning_content": "hm"},
        logprobs={"content": [{"token": "x", "logprob": -0.1, "bytes": [120]}]},
        extra={"timings": {"predicted_n": 1}},
    )
    out = events(FMT.piece(piece, 3))[0]
    assert out["choices"][0]["delta"] == {
        "content": "x",
        "tool_calls": [call],
        "reasoning_content": "hm",
    }
    assert out["choices"][0]["logprobs"]["content"][0]["token"] == "x"
    assert out["timings"] == {"predicted_n": 1}
    assert out["id"] == "chatcmpl-1"


def test_assemble_merges_tool_call_deltas_by_index() -> None:
    def call(index: int, **kw: Any) -> Delta:
        return Delta(fields={"tool_calls": [{"index": index, **kw}]})

    message, logprobs = assemble(
        [
            call(0, id="call_a", type="function", function={"name": "add", "arguments": ""}),
            call(0, function={"arguments": '{"a": '}),
            call(1, id="call_b", type="function", function={"name": "clock", "arguments": "{}"}),
            call(0, function={"arguments": "2}"}),
            Delta(fields={"reasoning_content": "think"}),
            Delta(fields={"reasoning_content": "ing"}),
        ]
    )
    assert message["content"] is None  # tool calls and no text: OpenAI says null
    assert message["reasoning_content"] == "thinking"
    assert message["tool_calls"] == [
        {"id": "call_a", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}},
        {"id": "call_b", "type": "function", "function": {"name": "clock", "arguments": "{}"}},
    ]
    assert logprobs is None
    text, _ = assemble(
        ["a", Delta("b", logprobs={"content": [1]}), Delta(logprobs={"content": [2]})]
    )
    assert text["content"] == "ab"


def test_failed_ending_is_an_openai_error_event() -> None:
    error = UpstreamTimeout("No output.", code="inactivity_timeout")
    out = events(stream_ending(FMT, Ending(Outcome.INACTIVITY, error=error)))
    assert out[0] == {
        "error": {
            "message": "No output.",
            "type": "timeout",
            "param": None,
            "code": "inactivity_timeout",
        }
    }
    assert out[1] == "[DONE]"


def test_non_stream_endings_map_to_http_errors() -> None:
    assert Ending(Outcome.COMPLETED, "stop", Usage(1, 1)).as_error() is None
    superseded = Ending.cancelled(CancelReason.SUPERSEDED).as_error()
    assert superseded is not None and superseded.status == 409
    assert superseded.body()["error"]["type"] == "superseded"
    shutdown = Ending.cancelled(CancelReason.SHUTDOWN).as_error()
    assert shutdown is not None and shutdown.status == 503


def test_completion_body() -> None:
    body = completion(
        stream_id="chatcmpl-1",
        model="m",
        created=1,
        pieces=["hello"],
        finish_reason="stop",
        usage=Usage(2, 1),
    )
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == "hello"
    assert body["usage"]["total_tokens"] == 3
    assert DONE == "data: [DONE]\n\n"


def test_role_and_numbered_content_chunks_carry_sse_event_ids() -> None:
    assert FMT.role().startswith("id: chatcmpl-1:0\ndata: ")
    assert FMT.content("hi", 7).startswith("id: chatcmpl-1:7\ndata: ")
    assert FMT.content("hi").startswith("data: ")  # unnumbered: no id line
    assert event_id("chatcmpl-1", 7) == "chatcmpl-1:7"


@given(st.text())
def test_the_content_template_encodes_any_text_like_the_full_chunk(text: str) -> None:
    fast = FMT.content(text)
    slow = sse(FMT._chunk([FMT._choice({"content": text}, None)]))
    assert fast == slow
    assert FMT.content(text, 3) == f"id: chatcmpl-1:3\n{slow}"


def test_a_model_name_holding_the_template_marker_cannot_break_the_template() -> None:
    fmt = ChunkFormat("chatcmpl-1", "\x00content\x00", 1)
    chunk = events(fmt.content("hi"))[0]
    assert chunk["model"] == "\x00content\x00" and chunk["choices"][0]["delta"] == {"content": "hi"}


def test_tool_call_deltas_without_an_index_continue_the_last_call() -> None:
    """Some servers omit ``index``: a new id starts a call, a fragment continues one."""

    def frag(**kw: Any) -> Delta:
        return Delta(fields={"tool_calls": [kw]})

    message, _ = assemble(
        [
            frag(id="a", type="function", function={"name": "add", "arguments": '{"a"'}),
            frag(function={"arguments": ": 1}"}),
            frag(id="b", type="function", function={"name": "now", "arguments": "{}"}),
        ]
    )
    assert [(c["id"], c["function"]) for c in message["tool_calls"]] == [
        ("a", {"name": "add", "arguments": '{"a": 1}'}),
        ("b", {"name": "now", "arguments": "{}"}),
    ]
