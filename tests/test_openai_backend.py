"""Backend ``openai``: a real OpenAI-compatible upstream (another jarvis-trio on the sim)."""

from __future__ import annotations

import pytest

from jarvis_trio.backends.openai_compat import OpenAICompatBackend
from jarvis_trio.backends.openai_wire import parse_sse_line
from jarvis_trio.errors import UpstreamError
from tests.conftest import RunningServer, StartServer, log_lines
from tests.helpers import deadline, eventually, read_all_events, sse_events, text_of

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
    assert parse_sse_line("data: [DONE]") is not None
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
