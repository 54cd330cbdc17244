"""Ollama's /api/chat protocol mapped to ours: pure functions."""

from __future__ import annotations

import pytest

from jarvis_trio.backends.ollama_wire import (
    ChatLines,
    chat_body,
    models_from_tags,
    parse_chat_line,
)
from jarvis_trio.config import normalize_ollama_url
from jarvis_trio.errors import (
    InvalidRequest,
    NotFound,
    UpstreamError,
    upstream_error_message,
    upstream_status_error,
)
from jarvis_trio.generation import ChatTurn, Delta, GenerationRequest, Usage


def test_request_fields_map_to_ollama_options() -> None:
    request = GenerationRequest(
        model="llama3.2:1b",
        messages=(ChatTurn("developer", "be brief"), ChatTurn("user", "hi")),
        max_tokens=7,
        temperature=0.5,
        top_p=0.9,
        seed=42,
        stop=("\n\n",),
    )
    assert chat_body(request) == {
        "model": "llama3.2:1b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
        ],
        "stream": True,
        "options": {
            "temperature": 0.5,
            "top_p": 0.9,
            "seed": 42,
            "stop": ["\n\n"],
            "num_predict": 7,
        },
    }
    bare = GenerationRequest(model="m", messages=(ChatTurn("user", "x"),))
    assert "options" not in chat_body(bare)


def test_content_lines_and_the_final_line() -> None:
    line = parse_chat_line(b'{"message":{"role":"assistant","content":"Hel"},"done":false}')
    assert line is not None and line.content == "Hel" and not line.end
    final = parse_chat_line(
        '{"message":{"role":"assistant","content":""},"done":true,"done_reason":"length",'
        '"prompt_eval_count":12,"eval_count":7}'
    )
    assert final is not None and final.end
    assert final.finish_reason == "length"
    assert final.usage == Usage(12, 7)
    other = parse_chat_line('{"done":true,"done_reason":"unload"}')
    assert other is not None and other.finish_reason == "stop"
    assert parse_chat_line(b"  \n") is None


@pytest.mark.parametrize(
    "raw", [b'{"message": {"content": "x"', b"[1,2]", b'{"message":{"content":5}}']
)
def test_malformed_lines_are_upstream_errors(raw: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_chat_line(raw)
    assert info.value.code == "upstream_malformed"


def test_error_line_is_an_upstream_error_with_its_message() -> None:
    with pytest.raises(UpstreamError, match="simulated failure"):
        parse_chat_line(b'{"error": "simulated failure"}')


def test_status_errors() -> None:
    url = "http://127.0.0.1:11434"
    message = upstream_error_message('{"error":"model \\"x\\" not found"}')
    assert message == 'model "x" not found'
    not_found = upstream_status_error(404, message, model="x", url=url)
    assert isinstance(not_found, NotFound) and not_found.param == "model"
    assert 'model "x" not found' in not_found.message
    assert isinstance(upstream_status_error(400, "bad", model="x", url=url), InvalidRequest)
    server = upstream_status_error(
        500, upstream_error_message('{"error":"boom"}'), model="x", url=url
    )
    assert isinstance(server, UpstreamError) and server.status == 502
    assert url in server.message and "boom" in server.message
    assert upstream_error_message("plain text") == "plain text"
    openai_shape = '{"error": {"message": "model gone", "type": "x"}}'
    assert upstream_error_message(openai_shape) == "model gone"


def test_tags() -> None:
    body = {"models": [{"name": "llama3.2:1b"}, {"model": "qwen2.5:0.5b"}, {"x": 1}]}
    assert [m.id for m in models_from_tags(body)] == ["llama3.2:1b", "qwen2.5:0.5b"]
    with pytest.raises(UpstreamError):
        models_from_tags({"nope": []})


@pytest.mark.parametrize(
    ("value", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:11434"),
        ("0.0.0.0:5000", "http://127.0.0.1:5000"),
        ("http://gpu-box:11434/", "http://gpu-box:11434"),
        ("http://gpu-box", "http://gpu-box:80"),
        ("https://ollama.example.org", "https://ollama.example.org:443"),
        ("[::1]", "http://[::1]:11434"),
    ],
)
def test_ollama_host_forms(value: str, url: str) -> None:
    assert normalize_ollama_url(value) == url


def test_a_lone_surrogate_from_upstream_becomes_a_replacement_character() -> None:
    line = parse_chat_line(b'{"message":{"content":"a\\ud800b?"},"done":false}')
    assert line is not None and line.content == "a\ufffdb?"
    line.content.encode("utf-8")  # writable as UTF-8


def test_tool_calls_thinking_and_logprobs_come_back_in_openais_names() -> None:
    lines = ChatLines()
    first = lines(
        b'{"model":"qwen3:4b","message":{"role":"assistant","content":"","thinking":"Hm.",'
        b'"tool_calls":[{"function":{"name":"add","arguments":{"a":1}}},'
        b'{"function":{"name":"clock","arguments":{}}}]},"done":false}'
    )
    second = lines(
        b'{"message":{"role":"assistant","content":"","tool_calls":[{"function":'
        b'{"name":"add","arguments":{"a":2}}}]},"done":false,'
        b'"logprobs":[{"token":"x","logprob":-0.5,"bytes":[120]}]}'
    )
    assert first is not None and isinstance(first.output, Delta)
    assert first.model == "qwen3:4b"
    assert first.output.fields["reasoning_content"] == "Hm."
    calls = first.output.fields["tool_calls"]
    assert [c["index"] for c in calls] == [0, 1]
    assert calls[0]["function"] == {"name": "add", "arguments": '{"a": 1}'}
    assert calls[0]["id"].startswith("call_") and calls[0]["type"] == "function"
    assert second is not None and isinstance(second.output, Delta)
    assert second.output.fields["tool_calls"][0]["index"] == 2  # numbered across the answer
    assert second.output.logprobs == {"content": [{"token": "x", "logprob": -0.5, "bytes": [120]}]}


def test_a_plain_line_stays_a_plain_string() -> None:
    piece = ChatLines()(b'{"message":{"role":"assistant","content":"Hi"},"done":false}')
    assert piece is not None and piece.output == "Hi"


def test_an_upstreams_status_keeps_its_meaning_and_its_retry_rule() -> None:
    busy = upstream_status_error(429, "slow down", model="m", url="u")
    assert (busy.status, busy.should_retry) == (429, True)
    refused = upstream_status_error(401, "bad key", model="m", url="u")
    assert (refused.status, refused.code, refused.should_retry) == (502, "upstream_auth", False)
    timed_out = upstream_status_error(408, "", model="m", url="u")
    assert (timed_out.status, timed_out.should_retry) == (504, True)
