"""Ollama's API on the gateway, the pure parts: requests in, NDJSON out."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from jarvis_trio.api.ollama import ndjson
from jarvis_trio.api.ollama.conversation import image_url
from jarvis_trio.api.ollama.requests import parse_chat, parse_generate
from jarvis_trio.backends import ollama_wire, openai_wire
from jarvis_trio.errors import InvalidRequest, UpstreamError
from jarvis_trio.generation import Delta, Usage, find_model
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.rules import CancelReason

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


FULL_CHAT: dict[str, Any] = {
    "model": "llama3.2:1b",
    "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "what is this?", "images": [PNG]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": "sunny", "tool_name": "get_weather"},
    ],
    "tools": [WEATHER],
    "format": {"type": "object"},
    "options": {
        "temperature": 0.2,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["\n\n"],
        "num_predict": 12,
        "top_k": 20,
        "num_gpu": 1,
        "use_mmap": False,
    },
    "think": True,
    "keep_alive": "10m",
}


def test_a_chat_request_reaches_ollama_as_it_was_sent() -> None:
    job = parse_chat(raw(FULL_CHAT)).to_generation("llama3.2:1b")
    body = ollama_wire.chat_body(job)
    sent = FULL_CHAT["messages"]
    assert body["messages"][0] == sent[0]
    assert body["messages"][1] == sent[1]
    assert body["messages"][2] == sent[2]
    assert body["messages"][3] == sent[3]
    assert body["tools"] == [WEATHER]
    assert body["format"] == {"type": "object"}
    assert body["options"] == FULL_CHAT["options"]
    assert body["think"] is True
    assert body["keep_alive"] == "10m"


def test_a_chat_request_reaches_an_openai_upstream_in_openai_names() -> None:
    job = parse_chat(raw(FULL_CHAT)).to_generation("m")
    body = openai_wire.chat_body(job)
    messages = body["messages"]
    assert messages[1]["content"][1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG}"},
    }
    call = messages[2]["tool_calls"][0]
    assert call == {
        "id": "call_2_0",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
    }
    assert messages[2]["content"] is None
    assert messages[3] == {"role": "tool", "content": "sunny", "tool_call_id": "call_2_0"}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": {"type": "object"}},
    }
    for key, value in {"temperature": 0.2, "top_p": 0.9, "seed": 7, "max_tokens": 12}.items():
        assert body[key] == value
    assert body["stop"] == ["\n\n"]
    assert body["top_k"] == 20  # a vendor extra vLLM and llama.cpp read
    # Only Ollama has a use for these: an OpenAI upstream never sees them.
    for key in ("think", "keep_alive", "options", "num_gpu", "use_mmap"):
        assert key not in body


def test_generate_is_a_one_turn_chat_and_options_map() -> None:
    asked = parse_generate(
        raw(
            {
                "model": "m",
                "prompt": "hi",
                "system": "be kind",
                "format": "json",
                "think": "high",
                "options": {"num_predict": -1, "stop": "END"},
            }
        )
    )
    assert asked.streaming  # Ollama's default
    job = asked.to_generation("m")
    assert [(t.role, t.content) for t in job.messages] == [("system", "be kind"), ("user", "hi")]
    assert job.max_tokens is None  # -1: no limit
    assert job.stop == ("END",)
    assert job.options["response_format"] == {"type": "json_object"}
    assert job.options["reasoning_effort"] == "high"
    assert ollama_wire.chat_body(job)["think"] == "high"


def test_tool_results_answer_the_oldest_open_call_of_their_name() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"function": {"name": "a", "arguments": {}}},
                    {"id": "mine", "function": {"name": "b", "arguments": {}}},
                    {"function": {"name": "a", "arguments": {"n": 2}}},
                ],
            },
            {"role": "tool", "content": "B", "tool_name": "b"},
            {"role": "tool", "content": "A1", "tool_name": "a"},
            {"role": "tool", "content": "A2", "tool_name": "a"},
        ],
    }
    turns = parse_chat(raw(body)).to_generation("m").messages
    assert [t.tool_call_id for t in turns[2:]] == ["mine", "call_1_0", "call_1_2"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"messages": []}, "model is required"),
        ({"model": 3}, "model: Input should be a valid string"),
        ({"model": "m", "stream": "yes"}, "stream: Input should be a valid boolean"),
        ({"model": "m", "messages": [{"role": "robot"}]}, "messages.0.role"),
        ({"model": "m", "messages": [{"role": "user", "content": 1}]}, "messages.0.content"),
        (
            {"model": "m", "messages": [{"role": "user", "images": ["@@"]}]},
            "messages.0.images: image 0 is not valid base64",
        ),
        (
            {"model": "m", "messages": [{"role": "assistant", "images": [PNG]}]},
            "messages.0.images: only user messages may carry images",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "tool_calls": [{"function": {}}]}]},
            "messages.0.tool_calls.0.function.name",
        ),
        ({"model": "m", "options": {"temperature": "hot"}}, "options.temperature"),
        ({"model": "m", "options": {"num_predict": 1.5}}, "options.num_predict"),
        ({"model": "m", "options": {"stop": [1]}}, "options.stop"),
        ({"model": "m", "options": {"use_mmap": 1}}, "options.use_mmap"),
        ({"model": "m", "options": {"top_p": 2}}, "options.top_p"),
        ({"model": "m", "format": "xml"}, "format"),
        ({"model": "m", "think": "max"}, "think"),
        ({"model": "m", "top_logprobs": 21}, "top_logprobs"),
        ({"model": "m", "options": []}, "options: Input should be a valid dictionary"),
    ],
)
def test_bad_chat_requests_name_the_field(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_chat(raw(body)).to_generation("m")
    assert message in caught.value.message
    assert caught.value.status == 400


@pytest.mark.parametrize("field", ["suffix", "template", "raw", "context"])
def test_generate_refuses_what_needs_the_models_own_template(field: str) -> None:
    value: object = [1, 2] if field == "context" else (True if field == "raw" else "x")
    with pytest.raises(InvalidRequest) as caught:
        parse_generate(raw({"model": "m", "prompt": "p", field: value}))
    assert caught.value.param == field


def test_unknown_fields_are_ignored_as_ollama_does() -> None:
    assert parse_chat(raw({"model": "m", "brand_new_field": 1})).model == "m"
    nulls = {"model": "m", "stream": None, "messages": [{"role": "user", "content": None}]}
    asked = parse_chat(raw(nulls))
    assert asked.streaming
    assert asked.to_generation("m").messages[0].content == ""


def test_image_types_are_read_from_their_bytes() -> None:
    jpeg = base64.b64encode(b"\xff\xd8\xff\xe0" + bytes(12)).decode()
    webp = base64.b64encode(b"RIFF\x00\x00\x00\x00WEBPVP8 ").decode()
    assert image_url(jpeg).startswith("data:image/jpeg;base64,")
    assert image_url(webp).startswith("data:image/webp;base64,")
    assert image_url(PNG).startswith("data:image/png;base64,")


def test_chunks_carry_text_thinking_and_logprobs() -> None:
    writer = ndjson.Writer("chat", "m")
    text = writer.chunk("Hi")
    assert text is not None
    assert text["message"] == {"role": "assistant", "content": "Hi"}
    assert text["done"] is False
    assert text["created_at"].endswith("Z")
    thought = writer.chunk(Delta(fields={"reasoning_content": "hmm"}))
    assert thought is not None
    assert thought["message"] == {"role": "assistant", "content": "", "thinking": "hmm"}
    scored = writer.chunk(Delta("a", logprobs={"content": [{"token": "a", "logprob": -1.0}]}))
    assert scored is not None
    assert scored["logprobs"] == [{"token": "a", "logprob": -1.0}]
    generate = ndjson.Writer("generate", "m").chunk(Delta("x", fields={"reasoning": "r"}))
    assert generate == {
        "model": "m",
        "created_at": generate["created_at"] if generate else None,
        "response": "x",
        "thinking": "r",
        "done": False,
    }


def fragments() -> list[Delta]:
    """A tool call as an OpenAI-compatible upstream streams it: arguments in pieces."""
    first = {"index": 0, "id": "call_1", "type": "function"}
    first["function"] = {"name": "get_weather", "arguments": '{"ci'}
    rest = {"index": 0, "function": {"arguments": 'ty": "Paris"}'}}
    return [Delta(fields={"tool_calls": [first]}), Delta(fields={"tool_calls": [rest]})]


def test_tool_calls_are_sent_whole_with_object_arguments() -> None:
    writer = ndjson.Writer("chat", "m")
    assert writer.lines(fragments()) == ""  # nothing until the call is whole
    ending = Ending(Outcome.COMPLETED, "tool_calls", Usage(3, 2))
    lines = [
        json.loads(x)
        for x in writer.ending_lines(ending, durations=ndjson.Durations()).splitlines()
    ]
    assert lines[0]["message"]["tool_calls"] == [
        {
            "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}},
            "id": "call_1",
        }
    ]
    assert lines[1]["done"] is True
    assert lines[1]["done_reason"] == "stop"  # as Ollama says after tool calls
    whole = ndjson.Writer("chat", "m").whole(fragments(), ending, durations=ndjson.Durations())
    assert whole["message"]["tool_calls"] == lines[0]["message"]["tool_calls"]


def test_arguments_that_are_not_an_object_end_the_stream_with_an_error_line() -> None:
    writer = ndjson.Writer("chat", "m")
    call = {"index": 0, "function": {"name": "f", "arguments": '{"cut'}}
    writer.lines([Delta(fields={"tool_calls": [call]})])
    out = writer.ending_lines(
        Ending(Outcome.COMPLETED, "length", Usage(1, 1)), durations=ndjson.Durations()
    )
    assert "not a JSON object" in json.loads(out)["error"]
    with pytest.raises(UpstreamError):
        writer.tool_calls()


@pytest.mark.parametrize(
    ("ending", "reason"),
    [
        (Ending(Outcome.COMPLETED, "stop", Usage(1, 2)), "stop"),
        (Ending(Outcome.COMPLETED, "length", Usage(1, 2)), "length"),
        (Ending.cancelled(CancelReason.SUPERSEDED), "superseded"),
        (Ending.cancelled(CancelReason.STOPPED), "stopped"),
        (Ending.cancelled(CancelReason.SHUTDOWN), "shutdown"),
    ],
)
def test_the_final_object_says_why_it_ended(ending: Ending, reason: str) -> None:
    durations = ndjson.Durations(total=1.5, load=0.25, prompt_eval=0.25, eval=1.0)
    writer = ndjson.Writer("generate", "m")
    writer.lines(["a", "b", "c", "d", "e"])  # five pieces reached the client
    final = json.loads(writer.ending_lines(ending, durations=durations))
    assert final["done"] is True
    assert final["done_reason"] == reason
    assert final["response"] == ""
    assert final["total_duration"] == 1_500_000_000
    assert final["load_duration"] == 250_000_000
    assert final["eval_duration"] == 1_000_000_000
    assert final["eval_count"] == (2 if ending.usage else 5)  # pieces sent when cut


def test_a_failed_stream_ends_with_ollamas_error_line() -> None:
    failed = Ending(Outcome.UPSTREAM_ERROR, error=UpstreamError("The model server failed: boom"))
    out = ndjson.Writer("chat", "m").ending_lines(failed, durations=ndjson.Durations())
    assert json.loads(out) == {"error": "The model server failed: boom"}


def test_model_names_with_latest_are_the_bare_name() -> None:
    from jarvis_trio.generation import ModelInfo

    listed = [
        ModelInfo("jarvis-sim", "x"),
        ModelInfo("llama3.2:1b", "x"),
        ModelInfo("qwen:latest", "x"),
    ]
    assert find_model(listed, "jarvis-sim:latest") == listed[0]
    assert find_model(listed, "llama3.2:1b") == listed[1]
    assert find_model(listed, "llama3.2") is None
    assert find_model(listed, "qwen") == listed[2]
    assert find_model(listed, "qwen:7b") is None
