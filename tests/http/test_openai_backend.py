"""Backend ``openai``: a real OpenAI-compatible upstream (another jarvis-trio on the sim)."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio

from jarvis_trio.backends.openai_compat import OpenAICompatBackend
from jarvis_trio.backends.openai_wire import parse_sse_line
from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import Piece
from tests.conftest import RunningServer, StartServer, log_lines
from tests.support.fake_openai import FakeOpenAI, serve_fake_openai
from tests.support.helpers import deadline, eventually, read_all_events, sse_events, text_of

CHAT = "/v1/chat/completions"


async def front_and_upstream(
    start_server: StartServer, **front: object
) -> tuple[RunningServer, RunningServer]:
    upstream = await start_server(sim_tokens_per_second=100.0)
    backend = OpenAICompatBackend(upstream.url + "/v1", api_key="upstream-key")
    return await start_server(backend, **front), upstream


@deadline(20)
async def test_streams_through_an_openai_compatible_upstream(start_server: StartServer) -> None:
    front, _ = await front_and_upstream(start_server)
    async with front.client() as client:
        body = {"prompt": "hello", "stream": True, "max_tokens": 4}
        body["stream_options"] = {"include_usage": True}
        async with client.stream("POST", CHAT, json=body) as r:
            events = await read_all_events(r)
        assert len(text_of(events).split()) == 4
        assert events[-3]["choices"][0]["finish_reason"] == "length"
        assert events[-2]["usage"]["completion_tokens"] == 4
        plain = await client.post(CHAT, json={"prompt": "hi", "max_tokens": 2})
        assert plain.json()["usage"]["completion_tokens"] == 2
        models = await client.get("/v1/models")
        assert [m["id"] for m in models.json()["data"]] == ["jarvis-sim"]


@deadline(20)
async def test_unknown_upstream_model_is_a_404_before_streaming(
    start_server: StartServer,
) -> None:
    front, _ = await front_and_upstream(start_server)
    async with front.client() as client:
        r = await client.post(CHAT, json={"prompt": "x", "stream": True, "model": "nope"})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


@deadline(20)
async def test_supersede_closes_the_upstream_stream(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    front, upstream = await front_and_upstream(start_server)
    headers = {"X-Session-Id": "chain"}
    long = {"prompt": "Long essay about AI", "stream": True}
    async with front.client() as ca, front.client() as cb:
        async with ca.stream("POST", CHAT, json=long, headers=headers) as a:
            events = sse_events(a)
            await anext(events)
            await anext(events)
            assert upstream.manager.statistics().live_streams == 1
            b = await cb.post(CHAT, json={"prompt": "hi", "max_tokens": 2}, headers=headers)
            assert b.status_code == 200
    # The upstream saw its client (our front server's worker thread) go away.
    await eventually(lambda: upstream.manager.statistics().sessions == 0)
    upstream_cancels = [line for line in log_lines(caplog) if "reason=disconnected" in line]
    assert upstream_cancels


@deadline(20)
async def test_unreachable_upstream_is_a_503_naming_the_url(start_server: StartServer) -> None:
    backend = OpenAICompatBackend("http://127.0.0.1:9/v1", connect_timeout=2.0)
    front = await start_server(backend)
    async with front.client() as client:
        r = await client.post(CHAT, json={"prompt": "x", "model": "m"})
    assert r.status_code == 503
    assert "http://127.0.0.1:9/v1" in r.json()["error"]["message"]


def test_sse_parsing() -> None:
    assert parse_sse_line(": keep-alive") is None
    assert parse_sse_line("data: [DONE]") == Piece(end=True)
    chunk = parse_sse_line('data: {"choices":[{"delta":{"content":"hi"},"finish_reason":null}]}')
    assert chunk is not None and chunk.content == "hi"
    with pytest.raises(UpstreamError):
        parse_sse_line('data: {"error": {"message": "boom"}}')
    with pytest.raises(UpstreamError):
        parse_sse_line("data: {not json")


@pytest.mark.parametrize(
    "line",
    [
        'data: {"choices":[{"delta":{"content":5}}]}',
        'data: {"choices":[],"usage":{"prompt_tokens":"many","completion_tokens":1}}',
    ],
)
def test_malformed_upstream_chunks_are_upstream_errors_not_crashes(line: str) -> None:
    with pytest.raises(UpstreamError) as info:
        parse_sse_line(line)
    assert info.value.code == "upstream_malformed"


def test_hostile_upstream_error_bodies_are_read_safely() -> None:
    from jarvis_trio.errors import upstream_error_message

    assert upstream_error_message("[" * 100_000) == ("[" * 100_000)[:500]
    assert len(upstream_error_message('{"error": "' + "x" * 10_000 + '"}')) == 500


CALL = {"index": 0, "id": "call_9", "type": "function", "function": {"name": "add"}}
SCRIPT: list[dict[str, Any]] = [
    {
        "id": "up-1",
        "object": "chat.completion.chunk",
        "model": "real-model-q4",
        "choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Adding."}}],
    },
    {
        "id": "up-1",
        "model": "real-model-q4",
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Sure"},
                "logprobs": {"content": [{"token": "Sure", "logprob": -0.1, "bytes": [83]}]},
            }
        ],
    },
    {
        "id": "up-1",
        "model": "real-model-q4",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{**CALL, "function": {"name": "add", "arguments": ""}}]},
            }
        ],
    },
    {
        "id": "up-1",
        "model": "real-model-q4",
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]},
            }
        ],
    },
    {
        "id": "up-1",
        "model": "real-model-q4",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}],
        "timings": {"predicted_n": 4, "predicted_ms": 12.5},
    },
    {
        "id": "up-1",
        "model": "real-model-q4",
        "choices": [],
        "usage": {
            "prompt_tokens": 630,
            "completion_tokens": 4,
            "total_tokens": 634,
            "prompt_tokens_details": {"cached_tokens": 600},
        },
    },
]


async def front_of_fake(
    start_server: StartServer, nursery: trio.Nursery
) -> tuple[RunningServer, FakeOpenAI]:
    fake: FakeOpenAI = await nursery.start(partial(serve_fake_openai, FakeOpenAI(SCRIPT)))
    front = await start_server(OpenAICompatBackend(fake.url))
    return front, fake


@deadline(20)
async def test_the_clients_body_reaches_the_upstream_as_sent(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    """Every field, vendor extras included; the gateway fills in only the model and owns
    ``stream`` and ``stream_options``."""
    front, fake = await front_of_fake(start_server, nursery)
    body: dict[str, Any] = {
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "add these"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                ],
                "name": "ada",
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "add", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
        ],
        "tools": [{"type": "function", "function": {"name": "add", "parameters": {}}}],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {}}},
        "logprobs": True,
        "top_logprobs": 2,
        "logit_bias": {"50256": -100},
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "reasoning_effort": "low",
        "max_completion_tokens": 64,
        "seed": 7,
        "stop": ["\n\n"],
        "user": "u-1",
        "metadata": {"k": "v"},
        "top_k": 20,
        "min_p": 0.05,
        "chat_template_kwargs": {"enable_thinking": False},
        "stream": True,
        "stream_options": {"include_usage": False},
    }
    async with front.client() as client:
        async with client.stream("POST", CHAT, json=body) as r:
            assert r.status_code == 200
            await read_all_events(r)
    sent = dict(body, model="upstream-default", stream=True)
    sent["stream_options"] = {"include_usage": True}
    assert fake.bodies == [sent]


@deadline(20)
async def test_every_field_of_the_answer_is_relayed_streaming_and_not(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    front, _ = await front_of_fake(start_server, nursery)
    ask = {"model": "real-model", "messages": [{"role": "user", "content": "add"}]}
    async with front.client() as client:
        body = {**ask, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", CHAT, json=body) as r:
            events = await read_all_events(r)
        whole = (await client.post(CHAT, json=ask)).json()
    chunks = [e for e in events if isinstance(e, dict)]
    assert {c["model"] for c in chunks} == {"real-model-q4"}  # the model that answered
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "Adding."} in deltas
    assert {"tool_calls": [{**CALL, "function": {"name": "add", "arguments": ""}}]} in deltas
    assert {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":1}'}}]} in deltas
    with_logprobs = [c for c in chunks if c["choices"] and c["choices"][0]["logprobs"]]
    assert with_logprobs[0]["choices"][0]["logprobs"]["content"][0]["token"] == "Sure"
    last, usage = chunks[-2], chunks[-1]
    assert last["choices"][0]["finish_reason"] == "tool_calls"
    assert last["timings"] == {"predicted_n": 4, "predicted_ms": 12.5}
    assert usage["usage"]["prompt_tokens_details"] == {"cached_tokens": 600}
    assert usage["usage"]["prompt_tokens"] == 630

    assert whole["model"] == "real-model-q4"
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Sure"
    assert choice["message"]["reasoning_content"] == "Adding."
    assert choice["message"]["tool_calls"] == [
        {"id": "call_9", "type": "function", "function": {"name": "add", "arguments": '{"a":1}'}}
    ]
    assert choice["logprobs"]["content"][0]["logprob"] == -0.1
    assert whole["timings"] == {"predicted_n": 4, "predicted_ms": 12.5}
    assert whole["usage"]["prompt_tokens_details"] == {"cached_tokens": 600}
