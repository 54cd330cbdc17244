"""The Ollama simulator over real sockets: protocol, the official client, faults, records."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any

import httpx
import ollama
import pytest
import trio

from jarvis_trio.ollama_sim import (
    MAX_BODY_BYTES,
    MAX_HEADER_BYTES,
    OllamaSim,
    main,
    parse_model,
    plan_answer,
    serve_ollama_sim,
)
from tests.support.helpers import deadline

MODEL = "llama3.2:1b"
FINAL_FIELDS = {
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
}


@pytest.fixture
async def sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(
        partial(serve_ollama_sim, "127.0.0.1", 0, tokens_per_second=1000.0)
    )
    return started


@pytest.fixture
async def client(sim: OllamaSim) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5.0) as c:
        yield c


def chat(model: str = MODEL, content: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def lines_of(response: httpx.Response) -> list[str]:
    return [line async for line in response.aiter_lines() if line]


async def stream_chat(
    client: httpx.AsyncClient, body: dict[str, Any], **kw: Any
) -> tuple[httpx.Response, list[Any]]:
    async with client.stream("POST", "/api/chat", json=body, **kw) as r:
        return r, [json.loads(line) for line in await lines_of(r)]


async def read_lines_into(
    got: list[str],
    client: httpx.AsyncClient,
    body: dict[str, Any],
    on_line: Callable[[], object] = lambda: None,
    **kw: Any,
) -> None:
    """Stream a chat into ``got`` line by line: what arrived before an error is kept."""
    async with client.stream("POST", "/api/chat", json=body, **kw) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            got.append(line)
            on_line()


def content_of(chunks: list[Any]) -> str:
    return "".join(c["message"]["content"] for c in chunks)


def post_bytes(path: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
    data = json.dumps(body).encode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = f"POST {path} HTTP/1.1\r\nHost: sim\r\ncontent-length: {len(data)}\r\n{extra}\r\n"
    return head.encode() + data


async def read_head(stream: trio.SocketStream) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return data


# -- protocol -----------------------------------------------------------------------


@deadline(10)
async def test_chat_streams_one_ndjson_line_per_token_then_a_final_line(
    client: httpx.AsyncClient,
) -> None:
    r, chunks = await stream_chat(client, chat())
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.headers["transfer-encoding"] == "chunked"
    *tokens, final = chunks
    assert len(tokens) == 40
    assert all(c["model"] == MODEL and c["done"] is False for c in tokens)
    assert all(c["message"]["role"] == "assistant" for c in chunks)
    pieces = [c["message"]["content"] for c in tokens]
    assert not pieces[0].startswith(" ")
    assert all(p.startswith(" ") and len(p) > 1 for p in pieces[1:])
    assert final["done"] is True
    assert final["done_reason"] == "stop"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert final.keys() >= FINAL_FIELDS
    assert final["eval_count"] == 40
    assert final["prompt_eval_count"] == 3  # "user: hello there"
    assert final["created_at"].endswith("Z")
    # Deterministic per prompt and seed.
    _, again = await stream_chat(client, chat())
    _, other = await stream_chat(client, chat(content="something else"))
    _, seeded = await stream_chat(client, chat(options={"seed": 7}))
    assert content_of(again) == content_of(chunks)
    assert content_of(other) != content_of(chunks)
    assert content_of(seeded) != content_of(chunks)


@deadline(10)
async def test_chat_without_streaming_is_one_object(client: httpx.AsyncClient) -> None:
    _, streamed = await stream_chat(client, chat())
    r = await client.post("/api/chat", json=chat(stream=False))
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["message"] == {"role": "assistant", "content": content_of(streamed)}
    assert body["done"] is True
    assert body["done_reason"] == "stop"
    assert body["eval_count"] == 40
    assert body.keys() >= FINAL_FIELDS


@deadline(10)
async def test_generate_streams_responses_and_not(client: httpx.AsyncClient) -> None:
    body = {"model": "qwen2.5:0.5b", "prompt": "why is the sky blue"}
    async with client.stream("POST", "/api/generate", json=body) as r:
        chunks = [json.loads(line) for line in await lines_of(r)]
    assert r.headers["content-type"] == "application/x-ndjson"
    *tokens, final = chunks
    assert len(tokens) == 40
    assert all("message" not in c and c["done"] is False for c in tokens)
    assert final["done"] is True
    assert final["response"] == ""
    assert final.keys() >= FINAL_FIELDS
    whole = await client.post("/api/generate", json={**body, "stream": False})
    assert whole.json()["response"] == "".join(c["response"] for c in tokens)
    # A tagless name means :latest, as in Ollama.
    latest = await client.post(
        "/api/generate", json={**body, "model": "tinyllama", "stream": False}
    )
    assert latest.status_code == 200
    assert latest.json()["model"] == "tinyllama"


@deadline(10)
async def test_an_empty_prompt_is_a_model_load(client: httpx.AsyncClient) -> None:
    for path, body in [
        ("/api/generate", {"model": MODEL}),
        ("/api/chat", {"model": MODEL, "messages": []}),
    ]:
        r = await client.post(path, json=body)
        assert r.status_code == 200
        assert r.json()["done"] is True
        assert r.json()["done_reason"] == "load"


@deadline(10)
async def test_tags_version_and_root(client: httpx.AsyncClient) -> None:
    tags = (await client.get("/api/tags")).json()["models"]
    assert [m["name"] for m in tags] == ["llama3.2:1b", "qwen2.5:0.5b", "tinyllama:latest"]
    for model in tags:
        assert model["model"] == model["name"]
        assert {"modified_at", "size", "digest"} <= model.keys()
        assert model["details"]["format"] == "gguf"
        assert {"family", "parameter_size", "quantization_level"} <= model["details"].keys()
    assert (await client.get("/api/version")).json() == {"version": "0.5.7"}
    assert (await client.get("/")).text == "Ollama is running"
    head = await client.head("/")
    assert head.status_code == 200
    assert head.content == b""


@deadline(10)
async def test_num_predict_caps_the_answer_with_length(client: httpx.AsyncClient) -> None:
    _, chunks = await stream_chat(client, chat(options={"num_predict": 5}))
    assert len(chunks) == 6
    assert chunks[-1]["done_reason"] == "length"
    assert chunks[-1]["eval_count"] == 5
    r = await client.post("/api/chat", json=chat(stream=False, options={"num_predict": 0}))
    assert r.json()["message"]["content"] == ""
    assert r.json()["done_reason"] == "length"


@deadline(10)
async def test_a_stop_string_ends_the_answer_before_it(client: httpx.AsyncClient) -> None:
    _, full = await stream_chat(client, chat())
    text = content_of(full)
    stop = text.split(" ")[6]
    cut = text.find(stop)
    _, chunks = await stream_chat(client, chat(options={"stop": [stop, "never there"]}))
    assert content_of(chunks) == text[:cut]
    assert chunks[-1]["done_reason"] == "stop"
    one = await client.post("/api/chat", json=chat(stream=False, options={"stop": stop}))
    assert one.json()["message"]["content"] == text[:cut]


def test_a_stop_string_across_two_tokens_is_cut_exactly() -> None:
    assert plan_answer(["ab", " cd", " ef"], None, ("b c",)) == (["a"], "stop")
    assert plan_answer(["ab", " cd", " ef"], 2, ("ef",)) == (["ab", " cd"], "length")
    assert plan_answer(["ab", " cd"], None, ("ab",)) == ([], "stop")


@deadline(10)
async def test_errors_are_shaped_like_ollamas(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json=chat("mistral:7b"))
    assert r.status_code == 404
    assert r.json() == {"error": 'model "mistral:7b" not found, try pulling it first'}
    r = await client.post("/api/chat", json=chat("mistral:7b+slow=1"))
    assert r.status_code == 404
    for body in [b"{not json", b"", b"[1, 2]", b'{"messages": []}', b'{"model": 3}']:
        r = await client.post("/api/chat", content=body)
        assert r.status_code == 400, body
        assert isinstance(r.json()["error"], str)
    for bad in [
        chat(stream="yes"),
        chat(options={"num_predict": "5"}),
        chat(options={"stop": [1]}),
        {"model": MODEL, "messages": "hi"},
    ]:
        assert (await client.post("/api/chat", json=bad)).status_code == 400, bad
    assert (
        await client.post("/api/generate", json={"model": MODEL, "prompt": 1})
    ).status_code == 400
    for fault in ["explode", "slow", "tokens=-1", "tokens=100001", "status=200", "slow=nan", ""]:
        model = f"{MODEL}+{fault}"
        r = await client.post("/api/chat", json=chat(model))
        assert r.status_code == 400, model
        assert "bad fault" in r.json()["error"]
    assert (await client.get("/api/nothing")).status_code == 404
    r = await client.get("/api/chat")
    assert r.status_code == 405
    assert r.headers["allow"] == "POST"
    assert (await client.post("/api/tags")).status_code == 405


def test_fault_syntax() -> None:
    model, faults, raw = parse_model("qwen2.5:0.5b+stall_headers+slow=0.5+http503+tokens=3")
    assert model.name == "qwen2.5:0.5b"
    assert faults.stall_headers == float("inf")
    assert faults.slow == 0.5
    assert faults.status == 503
    assert faults.tokens == 3
    assert raw == {"stall_headers": None, "slow": "0.5", "http503": None, "tokens": "3"}
    assert parse_model(f"{MODEL}+status")[1].status == 500
    assert parse_model(f"{MODEL}+stall_headers=0.25")[1].stall_headers == 0.25


@deadline(10)
async def test_body_and_header_limits(sim: OllamaSim, client: httpx.AsyncClient) -> None:
    big = b'{"model": "' + b"x" * MAX_BODY_BYTES + b'"}'
    r = await client.post("/api/chat", content=big)
    assert r.status_code == 413
    # The oversized body was drained, so the connection is still good.
    assert (await client.get("/api/version")).status_code == 200
    assert [r.outcome for r in sim.requests()] == ["rejected", "completed"]

    # Just over the cap (our check), and far over it (h11's, on an incomplete head).
    for size in [MAX_HEADER_BYTES + 10, 3 * MAX_HEADER_BYTES]:
        stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
        huge = "a" * size
        head = f"GET /api/version HTTP/1.1\r\nHost: s\r\nX-Big: {huge}\r\n\r\n"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, head.encode())
            assert (await read_head(stream)).startswith(b"HTTP/1.1 431 "), size
        await stream.aclose()

    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    await stream.send_all(b"NOT HTTP AT ALL\r\n\r\n")
    assert (await read_head(stream)).startswith(b"HTTP/1.1 400 ")
    await stream.aclose()


# -- the official ollama client ---------------------------------------------------


@deadline(15)
async def test_the_official_ollama_client_reads_everything(sim: OllamaSim) -> None:
    client = ollama.Client(host=sim.url, timeout=5)
    messages = [{"role": "user", "content": "hello there"}]

    def run() -> None:
        whole = client.chat(model=MODEL, messages=messages, options={"num_predict": 6})
        assert whole.done is True
        assert whole.done_reason == "length"
        assert whole.eval_count == 6
        assert whole.prompt_eval_count == 3
        assert whole.message.role == "assistant"
        assert whole.message.content is not None
        assert len(whole.message.content.split()) == 6

        parts = list(client.chat(model=MODEL, messages=messages, stream=True))
        assert all(p.done is False for p in parts[:-1])
        assert parts[-1].done is True
        assert parts[-1].done_reason == "stop"
        assert parts[-1].eval_count == 40
        assert len(parts) == 41
        text = "".join(p.message.content or "" for p in parts)
        assert text.startswith(whole.message.content)

        generated = client.generate(model="qwen2.5:0.5b", prompt="why")
        assert generated.done is True
        assert generated.response is not None
        assert len(generated.response.split()) == 40
        assert generated.eval_count == 40

        listed = client.list()
        assert [m.model for m in listed.models] == [
            "llama3.2:1b",
            "qwen2.5:0.5b",
            "tinyllama:latest",
        ]
        first = listed.models[0]
        assert first.details is not None
        assert first.details.family == "llama"
        assert first.size is not None
        assert first.modified_at is not None

        with pytest.raises(ollama.ResponseError) as missing:
            client.chat(model="mistral:7b", messages=messages)
        assert missing.value.status_code == 404
        assert missing.value.error == 'model "mistral:7b" not found, try pulling it first'

        # A mid-stream error line is raised by the client's own parser.
        failing = client.chat(model=f"{MODEL}+error_after=2", messages=messages, stream=True)
        with pytest.raises(ollama.ResponseError, match="simulated failure"):
            for _ in failing:
                pass

    await trio.to_thread.run_sync(run)


# -- faults, as a client sees them ------------------------------------------------


@deadline(10)
async def test_stall_headers_sends_nothing(sim: OllamaSim, client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ReadTimeout):
        await client.post("/api/chat", json=chat(f"{MODEL}+stall_headers"), timeout=0.3)
    before = trio.current_time()
    r = await client.post("/api/chat", json=chat(f"{MODEL}+stall_headers=0.3", stream=False))
    assert trio.current_time() - before >= 0.3
    assert r.status_code == 200
    assert r.json()["eval_count"] == 40


@deadline(10)
async def test_stall_after_goes_silent_after_n_tokens(client: httpx.AsyncClient) -> None:
    got: list[str] = []
    with pytest.raises(httpx.ReadTimeout):
        await read_lines_into(got, client, chat(f"{MODEL}+stall_after=3"), timeout=0.5)
    assert [json.loads(line)["done"] for line in got] == [False] * 3


@deadline(10)
async def test_slow_spaces_the_tokens(client: httpx.AsyncClient) -> None:
    before = trio.current_time()
    _, chunks = await stream_chat(client, chat(f"{MODEL}+slow=0.1+tokens=3"))
    assert trio.current_time() - before >= 0.3
    assert len(chunks) == 4


@deadline(10)
async def test_tokens_sets_the_answer_length(client: httpx.AsyncClient) -> None:
    _, chunks = await stream_chat(client, chat(f"{MODEL}+tokens=7"))
    assert len(chunks) == 8
    assert chunks[-1]["eval_count"] == 7
    assert chunks[-1]["model"] == f"{MODEL}+tokens=7"


@deadline(10)
async def test_disconnect_after_closes_without_ending_the_body(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    got: list[str] = []
    with pytest.raises(httpx.RemoteProtocolError):
        await read_lines_into(got, client, chat(f"{MODEL}+disconnect_after=3"))
    assert len(got) == 3
    (record,) = sim.records()
    assert record.closed_by == "server"
    assert record.requests[0].outcome == "fault_disconnect"
    assert record.requests[0].tokens_sent == 3


@deadline(10)
async def test_malformed_after_sends_a_broken_line_then_goes_on(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", "/api/chat", json=chat(f"{MODEL}+malformed_after=2")) as r:
        lines = await lines_of(r)
    assert len(lines) == 42
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[2])
    assert lines[2].startswith('{"model":')
    assert json.loads(lines[3])["done"] is False
    assert json.loads(lines[-1])["done"] is True
    assert sim.requests()[0].outcome == "completed"


@deadline(10)
async def test_error_after_sends_an_error_line_and_ends_cleanly(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", "/api/chat", json=chat(f"{MODEL}+error_after=2")) as r:
        lines = await lines_of(r)
    assert len(lines) == 3
    assert json.loads(lines[2]) == {"error": "simulated failure"}
    # Past the end of a short answer, it still fires (before the final line).
    async with client.stream(
        "POST", "/api/chat", json=chat(f"{MODEL}+tokens=2+error_after=9")
    ) as r:
        lines = await lines_of(r)
    assert [json.loads(line).get("error") for line in lines] == [None, None, "simulated failure"]
    (record,) = sim.records()  # both on one kept-alive connection: the bodies ended properly
    assert [r.outcome for r in record.requests] == ["error", "error"]


@deadline(10)
async def test_status_faults_answer_at_once(client: httpx.AsyncClient) -> None:
    for fault, status in [("status=500", 500), ("http500", 500), ("status=503", 503)]:
        r = await client.post("/api/chat", json=chat(f"{MODEL}+{fault}"))
        assert r.status_code == status
        assert r.json() == {"error": "simulated internal error"}


@deadline(10)
async def test_faults_without_streaming(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/chat", json=chat(f"{MODEL}+error_after=2", stream=False))
    assert r.status_code == 500
    assert r.json() == {"error": "simulated failure"}
    r = await client.post("/api/chat", json=chat(f"{MODEL}+malformed_after=1", stream=False))
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    with pytest.raises(httpx.RemoteProtocolError):
        await client.post("/api/chat", json=chat(f"{MODEL}+disconnect_after=1", stream=False))


# -- records ------------------------------------------------------------------------


def kinds_for(sim: OllamaSim, conn: int) -> list[str]:
    events = [e for e in sim.events() if e.conn == conn]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    return [e.kind for e in events if e.kind != "end"]


@deadline(10)
async def test_client_closing_during_a_stall_before_headers_is_recorded(sim: OllamaSim) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    body = chat(f"{MODEL}+stall_headers")
    await stream.send_all(post_bytes("/api/chat", body, {"X-Test": "early"}))
    request = await sim.wait_request(lambda r: r.headers.get("x-test") == "early")
    assert request.model == f"{MODEL}+stall_headers"
    assert request.faults == {"stall_headers": None}
    with trio.move_on_after(0.2) as silent:
        await stream.receive_some(1)
    assert silent.cancelled_caught
    before = time.monotonic()
    await stream.aclose()
    with trio.fail_after(1):
        record = await sim.wait_closed(request.conn)
    assert record.closed_by == "client"
    assert record.closed is not None
    assert before <= record.closed < before + 0.5
    (done,) = record.requests
    assert done.outcome == "client_closed"
    assert done.first_byte is None
    assert done.status is None
    assert kinds_for(sim, request.conn) == ["open", "request", "close"]
    assert sim.open_connections == 0
    assert sim.stats().live_requests == 0


@deadline(10)
async def test_client_closing_during_a_stall_after_tokens_is_recorded(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    body = chat(f"{MODEL}+stall_after=4")
    async with client.stream("POST", "/api/chat", json=body, headers={"X-Test": "mid"}) as r:
        got = 0
        async for _ in r.aiter_lines():
            got += 1
            if got == 4:
                break
        request = await sim.wait_request(lambda r: r.headers.get("x-test") == "mid")
        assert sim.open_connections == 1
        before = time.monotonic()
    with trio.fail_after(1):
        record = await sim.wait_closed(request.conn)
    assert record.closed_by == "client"
    assert record.closed is not None
    assert before <= record.closed < before + 0.5
    (done,) = record.requests
    assert done.outcome == "client_closed"
    assert done.tokens_sent == 4
    assert done.status == 200
    assert done.first_byte is not None
    assert done.received <= done.first_byte <= record.closed
    assert done.headers == {"x-test": "mid"}
    assert kinds_for(sim, request.conn) == ["open", "request", "close"]


@deadline(10)
async def test_kept_alive_requests_share_one_record(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    await client.post("/api/chat", json=chat(stream=False))
    await client.get("/api/tags", headers={"X-Jarvis-Trace": "t1"})
    (record,) = sim.records()
    assert record.closed is None
    assert [(r.index, r.path, r.outcome) for r in record.requests] == [
        (0, "/api/chat", "completed"),
        (1, "/api/tags", "completed"),
    ]
    assert record.requests[1].headers == {"x-jarvis-trace": "t1"}
    await client.aclose()
    with trio.fail_after(1):
        closed = await sim.wait_closed(record.id)
    assert closed.closed_by == "client"
    assert kinds_for(sim, record.id) == ["open", "request", "request", "close"]


@deadline(10)
async def test_pipelined_requests_wait_for_the_answer_before_them(sim: OllamaSim) -> None:
    stream = await trio.open_tcp_stream("127.0.0.1", sim.port)
    first = post_bytes("/api/chat", chat(f"{MODEL}+tokens=3"))
    await stream.send_all(first + b"GET /api/version HTTP/1.1\r\nHost: sim\r\n\r\n")
    data = b""
    while not data.endswith(b'{"version":"0.5.7"}'):
        chunk = await stream.receive_some(65536)
        assert chunk, data
        data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 2
    assert data.index(b'"done":true') < data.index(b'{"version"')
    await stream.aclose()
    (record,) = sim.records()
    assert [(r.path, r.outcome) for r in record.requests] == [
        ("/api/chat", "completed"),
        ("/api/version", "completed"),
    ]


@deadline(10)
async def test_control_endpoints_and_reset(sim: OllamaSim, client: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sim.url, timeout=5.0) as other:
        await other.post("/api/chat", json=chat(f"{MODEL}+tokens=2"))
    connections = (await client.get("/_sim/connections")).json()
    api, control = connections
    assert api["closed_by"] == "client"
    assert api["requests"][0]["model"] == f"{MODEL}+tokens=2"
    assert api["requests"][0]["faults"] == {"tokens": "2"}
    assert api["requests"][0]["tokens_sent"] == 2
    assert set(api) == {
        "id",
        "peer",
        "opened",
        "closed",
        "closed_by",
        "control_requests",
        "requests",
    }
    assert control["control_requests"] == 1
    assert control["requests"] == []  # control requests are not recorded
    events = (await client.get("/_sim/events")).json()
    assert [e["kind"] for e in events if e["conn"] == api["id"]] == [
        "open",
        "request",
        "end",
        "close",
    ]
    assert events[1] == {
        "seq": events[1]["seq"],
        "t": events[1]["t"],
        "kind": "request",
        "conn": api["id"],
        "request": 0,
        "method": "POST",
        "path": "/api/chat",
        "model": f"{MODEL}+tokens=2",
    }
    stats = (await client.get("/_sim/stats")).json()
    assert stats == {
        "open_connections": 0,
        "live_requests": 0,
        "session_live": {},
        "session_peak": {},
    }
    last_seq = events[-1]["seq"]

    assert (await client.post("/_sim/reset")).json() == {"status": "reset"}
    (still_open,) = (await client.get("/_sim/connections")).json()
    assert still_open["id"] == control["id"]
    assert (await client.get("/_sim/events")).json() == []
    await client.get("/api/version")  # on the same, still listed, connection
    (record,) = sim.records()
    assert [r.path for r in record.requests] == ["/api/version"]
    assert [e.seq > last_seq for e in sim.events()] == [True, True]
    assert (await client.get("/_sim/nothing")).status_code == 404
    assert (await client.get("/_sim/reset")).status_code == 405


@deadline(10)
async def test_peak_concurrent_requests_per_session(
    sim: OllamaSim, client: httpx.AsyncClient
) -> None:
    release = trio.Event()

    async def hold(session: str) -> None:
        headers = {"X-Jarvis-Session": session}
        body = chat(f"{MODEL}+stall_after=1")
        async with client.stream("POST", "/api/chat", json=body, headers=headers) as r:
            async for _ in r.aiter_lines():
                break
            await release.wait()

    async with trio.open_nursery() as nursery:
        for session in ["a", "a", "a", "b"]:
            nursery.start_soon(hold, session)
        await sim.wait_until(lambda: sim.stats().live_requests == 4)
        assert sim.stats().session_live == {"a": 3, "b": 1}
        assert sim.open_connections == 4
        release.set()
    await sim.wait_until(lambda: sim.stats().live_requests == 0)
    # One after the other does not add up.
    for _ in range(2):
        headers = {"X-Jarvis-Session": "b"}
        await client.post("/api/chat", json=chat(stream=False), headers=headers)
    stats = sim.stats()
    assert stats.session_peak == {"a": 3, "b": 1}
    assert stats.session_live == {}
    sim.reset()
    assert sim.stats().session_peak == {}


@deadline(10)
async def test_stopping_the_simulator_closes_its_connections() -> None:
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def run(task_status: trio.TaskStatus[OllamaSim]) -> None:
            with scope:
                await serve_ollama_sim(tokens_per_second=1000.0, task_status=task_status)

        sim: OllamaSim = await nursery.start(run)
        async with httpx.AsyncClient(base_url=sim.url, timeout=5.0) as client:
            got: list[str] = []
            body = chat(f"{MODEL}+stall_after=1")
            with pytest.raises(httpx.RemoteProtocolError):
                await read_lines_into(got, client, body, on_line=scope.cancel)
    assert len(got) == 1
    (record,) = sim.records()
    assert record.closed_by == "server"
    assert record.requests[0].outcome == "shutdown"
    assert kinds_for(sim, record.id) == ["open", "request", "close"]


# -- the command line ---------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
@deadline(15)
async def test_main_serves_until_a_signal(signum: signal.Signals) -> None:
    argv = [sys.executable, "-m", "jarvis_trio.ollama_sim", "--port", "0"]
    process = await trio.lowlevel.open_process(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        assert process.stderr is not None
        output = b""
        while b"\n" not in output:
            chunk = await process.stderr.receive_some()
            assert chunk, output
            output += chunk
        line = output.decode().splitlines()[0]
        assert line.startswith("ollama_sim listening url=http://127.0.0.1:")
        url = line.removeprefix("ollama_sim listening url=")
        async with httpx.AsyncClient(base_url=url, timeout=5.0) as client:
            assert (await client.get("/api/version")).json() == {"version": "0.5.7"}
        process.send_signal(signum)
        with trio.fail_after(10):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_main_refuses_a_non_loopback_address(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0"]) == 2
    assert "only loopback" in capsys.readouterr().err
