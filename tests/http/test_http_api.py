"""The HTTP API through real hypercorn on 127.0.0.1:0, with httpx."""

from __future__ import annotations

from functools import partial
from typing import Any

import httpx
import pytest
import trio

from jarvis_trio.generation import Output
from tests.conftest import RunningServer, StartServer, log_lines
from tests.support.fakes import FakeBackend
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    text_of,
)

CHAT = "/v1/chat/completions"
LONG = {"messages": [{"role": "user", "content": "Long essay about AI"}], "stream": True}


def chat(content: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}], **extra}


@deadline(20)
async def test_stream_is_in_openai_chunk_format(client: httpx.AsyncClient) -> None:
    body = chat("hello there", stream=True, max_tokens=5, stream_options={"include_usage": True})
    headers = {"X-Session-Id": "fmt-1", "X-Request-Id": "my-req-1"}
    async with client.stream("POST", CHAT, json=body, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-session-id"] == "fmt-1"
        assert r.headers["x-request-id"] == "my-req-1"
        events = await read_all_events(r)
    stream_id = r.headers["x-stream-id"]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["id"] == stream_id and c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = chunks[1:-2]
    assert len(content) == 5
    assert all(c["choices"][0]["finish_reason"] is None for c in content)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5
    assert all(c["usage"] is None for c in chunks[:-1])


@deadline(20)
async def test_non_stream_returns_a_chat_completion(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=chat("What is 2+2?", max_completion_tokens=7))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"] == r.headers["x-stream-id"]
    assert r.headers["x-request-id"].startswith("req-")
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 7
    assert choice["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10}


@deadline(20)
async def test_prompt_shorthand_of_the_original_notes(client: httpx.AsyncClient) -> None:
    async with client.stream("POST", CHAT, json={"prompt": "new task", "stream": True}) as r:
        assert r.status_code == 200
        events = await read_all_events(r)
    assert events[-1] == "[DONE]"
    assert text_of(events)
    assert events[-2]["choices"][0]["finish_reason"] == "stop"


@deadline(20)
async def test_models_and_health(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [m["id"] for m in models["data"]] == ["jarvis-sim"]
    health = await client.get("/healthz")
    assert health.json() == {
        "status": "ok",
        "backend": "sim",
        "sessions": 0,
        "live_streams": 0,
        "running_streams": 0,
        "max_streams": 256,
        "waiting_streams": 0,
        "refused": {"full": 0, "shutting_down": 0},
    }


@deadline(30)
async def test_prompt_b_supersedes_a_in_the_same_session(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The original notes' check: B gets 200 and streams, A ends cleanly, logs in order."""
    headers = {"X-Session-Id": "sess-ab"}
    async with server.client() as client_a, server.client() as client_b:
        async with client_a.stream("POST", CHAT, json=LONG, headers=headers) as a:
            assert a.status_code == 200
            a_events = sse_events(a)
            first = [await anext(a_events) for _ in range(3)]
            async with client_b.stream(
                "POST", CHAT, json=chat("What is 2+2?", stream=True), headers=headers
            ) as b:
                assert b.status_code == 200
                rest_of_a = [e async for e in a_events]
                b_events = await read_all_events(b)
    a_id, b_id = a.headers["x-stream-id"], b.headers["x-stream-id"]
    assert a_id != b_id
    assert rest_of_a[-1] == "[DONE]"
    a_last = rest_of_a[-2]
    assert a_last["id"] == a_id
    assert outcome_of(a_last) == "superseded"
    assert a_last["jarvis"] == {"outcome": "superseded"}
    assert text_of(first + rest_of_a)  # A streamed before it was superseded
    assert b_events[-1] == "[DONE]"
    assert b_events[-2]["choices"][0]["finish_reason"] == "stop"
    log = log_lines(caplog)
    cancelled = log.index(f"stream_cancelled trace={a_id} reason=superseded")
    clean = log.index(f"prev_stream_finished_cleanly session=sess-ab trace={a_id}")
    b_start = next(i for i, line in enumerate(log) if line.startswith(f"stream_start trace={b_id}"))
    assert cancelled < clean < b_start
    a_end = next(line for line in log if line.startswith(f"stream_end trace={a_id}"))
    assert "outcome=superseded" in a_end and "duration_ms=" in a_end


@deadline(30)
async def test_non_stream_request_superseded_gets_409(server: RunningServer) -> None:
    headers = {"X-Session-Id": "sess-409"}
    async with server.client() as client_a, server.client() as client_b, trio.open_nursery() as n:
        results: dict[str, httpx.Response] = {}

        async def send_a() -> None:
            results["a"] = await client_a.post(
                CHAT, json=chat("Long essay about AI"), headers=headers
            )

        n.start_soon(send_a)
        await eventually(lambda: server.manager.statistics().live_streams == 1)
        b = await client_b.post(CHAT, json=chat("hi", max_tokens=2), headers=headers)
    assert b.status_code == 200
    a = results["a"]
    assert a.status_code == 409
    assert a.json()["error"]["type"] == "superseded"
    assert a.json()["error"]["code"] == "superseded"


@deadline(30)
async def test_a_waiting_request_is_superseded_by_a_newer_one_and_never_starts(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend(interval=0.01, die_after={"A": 1.0})
    server = await start_server(backend)
    headers = {"X-Session-Id": "sess-abc"}
    async with (
        server.client() as ca,
        server.client() as cb,
        server.client() as cc,
        trio.open_nursery() as nursery,
    ):
        async with ca.stream("POST", CHAT, json=chat("A", stream=True), headers=headers) as a:
            # Keep the iterator referenced: a collected half-read one closes the connection.
            a_events = sse_events(a)
            await anext(a_events)
            b_result: list[Any] = []

            async def send_b() -> None:
                async with cb.stream(
                    "POST", CHAT, json=chat("B", stream=True), headers=headers
                ) as b:
                    b_result.append(b.status_code)
                    b_result.extend(await read_all_events(b))

            nursery.start_soon(send_b)
            await eventually(lambda: any("reason=superseded" in x for x in log_lines(caplog)))
            await trio.sleep(0.2)
            c = await cc.post(CHAT, json=chat("C", max_tokens=3), headers=headers)
            a_rest = [e async for e in a_events]
    assert outcome_of(a_rest[-2]) == "superseded"  # not a disconnect
    assert c.status_code == 200
    assert b_result[0] == 200
    b_events = b_result[1:]
    assert b_events[-1] == "[DONE]"
    assert outcome_of(b_events[-2]) == "superseded"
    assert text_of(b_events) == ""
    assert "B" not in backend.starts


@deadline(20)
async def test_client_disconnect_cancels_the_stream(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with server.client() as client, client.stream("POST", CHAT, json=LONG) as r:
        events = sse_events(r)
        await anext(events)
        await anext(events)
        assert server.manager.statistics().live_streams == 1
        # Leaving the block closes the connection mid-stream.
    await eventually(lambda: server.manager.statistics().sessions == 0)
    stream_id = r.headers["x-stream-id"]
    assert f"stream_cancelled trace={stream_id} reason=disconnected" in log_lines(caplog)


@deadline(20)
async def test_client_disconnect_of_a_non_stream_request_cancels_it(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    async with server.client() as client, trio.open_nursery() as nursery:
        nursery.start_soon(partial(client.post, CHAT, json=chat("Long essay about AI")))
        await eventually(lambda: server.manager.statistics().live_streams == 1)
        nursery.cancel_scope.cancel()
    await eventually(lambda: server.manager.statistics().sessions == 0)
    assert any("reason=disconnected" in line for line in log_lines(caplog))


@deadline(20)
async def test_stop_endpoint_joins_the_stream_and_says_how_it_ended(
    server: RunningServer,
) -> None:
    headers = {"X-Session-Id": "sess-stop"}
    async with server.client() as client, server.client() as stopper:
        idle = await stopper.post("/v1/sessions/sess-stop/cancel")
        assert idle.status_code == 200
        assert idle.json()["result"] == "nothing_live"
        assert idle.json()["stream_id"] is None
        async with client.stream("POST", CHAT, json=LONG, headers=headers) as r:
            events = sse_events(r)
            await anext(events)
            stop = await stopper.post("/v1/sessions/sess-stop/cancel")
            rest = [e async for e in events]
    body = stop.json()
    assert stop.status_code == 200
    assert body["object"] == "session.cancel"
    assert body["result"] == "finished_cleanly"
    assert body["stream_id"] == r.headers["x-stream-id"]
    assert server.manager.statistics().live_streams == 0
    assert rest[-1] == "[DONE]"
    assert outcome_of(rest[-2]) == "stopped"


@pytest.mark.slow
@deadline(20)
async def test_stop_reports_a_join_timeout(start_server: StartServer) -> None:
    server = await start_server(FakeBackend(die_after={"A": 3.0}), join_budget=0.2)
    headers = {"X-Session-Id": "sess-stuck"}
    async with server.client() as client, server.client() as stopper:
        async with client.stream("POST", CHAT, json=chat("A", stream=True), headers=headers) as r:
            events = sse_events(r)
            await anext(events)
            stop = await stopper.post("/v1/sessions/sess-stuck/cancel")
            rest = [e async for e in events]
    assert outcome_of(rest[-2]) == "stopped"
    assert stop.json()["result"] == "join_timeout"
    assert stop.json()["waited_ms"] >= 200


@deadline(20)
async def test_inactivity_timeout_ends_the_stream_with_an_error_event(
    start_server: StartServer,
) -> None:
    server = await start_server(
        FakeBackend(interval=0.01, silent_after={"A": 2}), stream_inactivity_seconds=0.3
    )
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=chat("A", stream=True)) as r:
            events = await read_all_events(r)
    assert text_of(events) == "A-0 A-1 "
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "inactivity_timeout"
    assert events[-2]["error"]["type"] == "timeout"


@deadline(20)
async def test_stream_outlives_quarts_response_timeout(start_server: StartServer) -> None:
    """quart-trio cuts a response after RESPONSE_TIMEOUT; streams must never be cut."""
    server = await start_server(sim_tokens_per_second=20.0)
    server.app.config["RESPONSE_TIMEOUT"] = 0.2  # as if the 60 s default were short
    async with server.client() as client:
        body = chat("hello", stream=True, max_tokens=12)
        async with client.stream("POST", CHAT, json=body) as r:
            events = await read_all_events(r)
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert len(text_of(events).split()) == 12


@deadline(20)
async def test_requests_without_session_id_run_side_by_side(server: RunningServer) -> None:
    async with (
        server.client() as c1,
        server.client() as c2,
        c1.stream("POST", CHAT, json=LONG) as a,
        c2.stream("POST", CHAT, json=LONG) as b,
    ):
        a_events, b_events = sse_events(a), sse_events(b)
        await anext(a_events)
        await anext(b_events)
        assert server.manager.statistics().live_streams == 2


@deadline(30)
async def test_a_client_that_stops_reading_cannot_make_the_server_buffer_without_bound(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """10,000 chunks of 10 KB are on offer (100 MB); the client reads nothing. The
    server produces only what its 64-chunk buffer and the socket hold, then ends
    the stream as a disconnect once the client has not read for the inactivity time."""

    class Bulky(FakeBackend):
        async def generate(self, request: Any, sink: Any) -> Any:
            class Big:
                def opened(self, model: str | None = None) -> None:
                    sink.opened()

                async def send(self, text: Output) -> None:
                    assert isinstance(text, str)
                    await sink.send(text * 1000)

            return await super().generate(request, Big())

    backend = Bulky(interval=0.0, tokens=10_000)
    server = await start_server(backend, stream_inactivity_seconds=0.5)
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        body = b'{"prompt": "A", "stream": true}'
        await stream.send_all(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        await eventually(lambda: server.manager.statistics().live_streams == 1)
        await eventually(lambda: server.manager.statistics().sessions == 0, within=10)
    ended = [line for line in log_lines(caplog) if line.startswith("stream_end")]
    assert "outcome=disconnected" in ended[0]
    produced = int(ended[0].split("tokens=")[1].split()[0])
    assert produced < 500, f"{produced} chunks of 10 KB were produced for a client reading none"
    assert "reason=client_not_reading" in "\n".join(log_lines(caplog))


@deadline(20)
async def test_coalesced_writes_carry_every_token_in_order(start_server: StartServer) -> None:
    server = await start_server(FakeBackend(interval=0.005, tokens=40), coalesce_ms=30)
    body = chat("C", stream=True)
    async with server.client() as client, client.stream("POST", CHAT, json=body) as r:
        assert r.status_code == 200
        events = await read_all_events(r)
    assert events[-1] == "[DONE]"
    assert text_of(events) == "".join(f"C-{i} " for i in range(40))
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
