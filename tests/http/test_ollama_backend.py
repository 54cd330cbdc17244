"""Backend ``ollama`` through real hypercorn, against the fault-injecting Ollama simulator.

Order of events is read from the simulator's records (a global ``seq``), not from
wall-clock thresholds.
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

import pytest
import trio

from jarvis_trio.backends import choose_backend
from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.backends.sim import SimBackend
from jarvis_trio.config import Settings
from jarvis_trio.generation import Output
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from tests.conftest import RunningServer, StartServer
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    text_of,
)

CHAT = "/v1/chat/completions"
MODEL = "llama3.2:1b"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=100.0))
    return started


async def gateway(
    start_server: StartServer, sim: OllamaSim, **settings: Any
) -> tuple[RunningServer, trio.CapacityLimiter]:
    limiter = trio.CapacityLimiter(16)
    backend = OllamaBackend(sim.url, limiter=limiter, connect_timeout=2.0)
    return await start_server(backend, **settings), limiter


def chat(model: str, *, stream: bool = True, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream}
    return body | extra


def seq_of(sim: OllamaSim, kind: str, conn: int) -> int:
    return next(e.seq for e in sim.events() if e.kind == kind and e.conn == conn)


async def all_closed(sim: OllamaSim, limiter: trio.CapacityLimiter) -> None:
    """Nothing left behind: no open upstream connection, no worker thread still busy.

    trio keeps idle worker threads cached for reuse, so "no thread left" is read
    from the limiter: every thread we started has returned its slot.
    """
    with trio.fail_after(5):
        await sim.wait_until(lambda: sim.open_connections == 0)
    await eventually(lambda: limiter.borrowed_tokens == 0)


@deadline(20)
async def test_streams_and_maps_fields(start_server: StartServer, sim: OllamaSim) -> None:
    server, limiter = await gateway(start_server, sim)
    async with server.client() as client:
        body = chat(MODEL, max_tokens=5, stream_options={"include_usage": True})
        async with client.stream("POST", CHAT, json=body) as r:
            events = await read_all_events(r)
        assert len(text_of(events).split()) == 5
        assert events[-3]["choices"][0]["finish_reason"] == "length"  # done_reason
        usage = events[-2]["usage"]
        assert usage["completion_tokens"] == 5  # eval_count
        assert usage["prompt_tokens"] > 0  # prompt_eval_count
        whole = await client.post(CHAT, json=chat(MODEL, stream=False))
        assert whole.status_code == 200
        assert whole.json()["choices"][0]["finish_reason"] == "stop"
        assert len(whole.json()["choices"][0]["message"]["content"].split()) == 40
        models = (await client.get("/v1/models")).json()["data"]
        assert MODEL in [m["id"] for m in models]
    await all_closed(sim, limiter)


@pytest.mark.parametrize("where", ["after first token", "before headers"])
@deadline(30)
async def test_silent_upstream_is_closed_before_the_next_prompt_reaches_it(
    start_server: StartServer, sim: OllamaSim, where: str
) -> None:
    """A stalls silently; B arrives in the same session. B streams, A ends cleanly,
    and A's upstream connection is closed before B's upstream request is made."""
    server, limiter = await gateway(start_server, sim)
    fault = "stall_after=1" if where == "after first token" else "stall_headers"
    headers = {"X-Session-Id": "stall"}
    async with server.client() as ca, server.client() as cb, trio.open_nursery() as nursery:
        a_events: list[Any] = []

        async def run_a() -> None:
            async with ca.stream("POST", CHAT, json=chat(f"{MODEL}+{fault}"), headers=headers) as a:
                assert a.status_code == 200
                a_events.extend(await read_all_events(a))

        nursery.start_soon(run_a)
        first = await sim.wait_request(lambda r: r.path == "/api/chat")
        if where == "after first token":
            await sim.wait_until(lambda: any(r.tokens_sent == 1 for r in sim.requests()))
        async with cb.stream("POST", CHAT, json=chat(MODEL), headers=headers) as b:
            assert b.status_code == 200
            b_events = await read_all_events(b)
    assert b_events[-1] == "[DONE]"
    assert b_events[-2]["choices"][0]["finish_reason"] == "stop"
    assert outcome_of(a_events[-2]) == "superseded"
    second = next(r for r in sim.requests() if r.conn != first.conn)
    assert sim.record(first.conn).closed_by == "client"
    assert seq_of(sim, "close", first.conn) < seq_of(sim, "request", second.conn)
    await all_closed(sim, limiter)


@deadline(20)
async def test_client_disconnect_closes_the_upstream(
    start_server: StartServer, sim: OllamaSim
) -> None:
    server, limiter = await gateway(start_server, sim)
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=chat(f"{MODEL}+tokens=500")) as r:
            await anext(sse_events(r))
        # leaving the block closed our connection mid-stream
    await all_closed(sim, limiter)
    (request,) = sim.requests()
    assert sim.record(request.conn).closed_by == "client"
    assert request.outcome != "completed"


@deadline(20)
async def test_stop_closes_a_silent_upstream(start_server: StartServer, sim: OllamaSim) -> None:
    server, limiter = await gateway(start_server, sim)
    headers = {"X-Session-Id": "stop-silent"}
    async with server.client() as client, server.client() as stopper:
        body = chat(f"{MODEL}+stall_after=2")
        async with client.stream("POST", CHAT, json=body, headers=headers) as r:
            events = sse_events(r)
            for _ in range(3):  # the role chunk and both tokens: the upstream is silent now
                await anext(events)
            assert [r.tokens_sent for r in sim.requests()] == [2]
            stop = await stopper.post("/v1/sessions/stop-silent/cancel")
            rest = [e async for e in events]
    assert stop.json()["result"] == "finished_cleanly"
    assert outcome_of(rest[-2]) == "stopped"
    await all_closed(sim, limiter)


@deadline(20)
async def test_inactivity_closes_a_stalled_upstream(
    start_server: StartServer, sim: OllamaSim
) -> None:
    server, limiter = await gateway(
        start_server, sim, stream_inactivity_seconds=0.3, first_token_timeout=0.5
    )
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=chat(f"{MODEL}+stall_after=2")) as r:
            events = await read_all_events(r)
        assert len(text_of(events).split()) == 2
        assert events[-2]["error"]["code"] == "inactivity_timeout"
        loading = await client.post(CHAT, json=chat(f"{MODEL}+stall_headers"))
        assert loading.status_code == 504  # nothing was sent yet: a plain HTTP error
        assert loading.json()["error"]["code"] == "first_token_timeout"
    await all_closed(sim, limiter)
    assert all(r.closed_by == "client" for r in sim.records() if not r.is_control)


# Each fault: (model suffix, streaming ending, non-streaming status, error code)
FAULTS = [
    ("+slow=0.01+tokens=5", "stop", 200, None),
    ("+disconnect_after=3", "error", 502, "upstream_disconnected"),
    ("+malformed_after=2", "error", 502, "upstream_malformed"),
    ("+error_after=2", "error", 502, "upstream_error"),
    ("+status=500", "http", 502, None),
    ("-unknown", "http", 404, "model_not_found"),
]


@pytest.mark.parametrize(("suffix", "ending", "status", "code"), FAULTS)
@deadline(20)
async def test_every_fault_gives_its_documented_result(
    start_server: StartServer,
    sim: OllamaSim,
    suffix: str,
    ending: str,
    status: int,
    code: str | None,
) -> None:
    server, limiter = await gateway(start_server, sim)
    model = MODEL + suffix
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=chat(model)) as r:
            if ending == "http":
                await r.aread()
                assert r.status_code == status
                error = r.json()["error"]
            else:
                assert r.status_code == 200
                events = await read_all_events(r)
                assert events[-1] == "[DONE]"
                if ending == "stop":
                    assert events[-2]["choices"][0]["finish_reason"] == "stop"
                else:
                    error = events[-2]["error"]
                    assert error["type"] == "upstream_error"
        if ending != "stop" and code is not None:
            assert error["code"] == code
        plain = await client.post(CHAT, json=chat(model, stream=False))
        assert plain.status_code == status
        if code is not None:
            assert plain.json()["error"]["code"] == code
        # ... and the server keeps serving.
        assert (await client.post(CHAT, json=chat(MODEL, stream=False))).status_code == 200
    await all_closed(sim, limiter)


@deadline(20)
async def test_mid_stream_error_line_keeps_ollamas_message(
    start_server: StartServer, sim: OllamaSim
) -> None:
    server, _ = await gateway(start_server, sim)
    async with server.client() as client:
        async with client.stream("POST", CHAT, json=chat(f"{MODEL}+error_after=1")) as r:
            events = await read_all_events(r)
    assert text_of(events)
    assert "simulated failure" in events[-2]["error"]["message"]


@deadline(20)
async def test_connection_refused_is_a_503_naming_the_url(start_server: StartServer) -> None:
    server = await start_server(OllamaBackend("http://127.0.0.1:9", connect_timeout=2.0))
    async with server.client() as client:
        r = await client.post(CHAT, json=chat(MODEL))
    assert r.status_code == 503
    assert "http://127.0.0.1:9" in r.json()["error"]["message"]


@deadline(20)
async def test_auto_picks_ollama_when_it_answers_else_the_embedded_model(
    sim: OllamaSim, caplog: pytest.LogCaptureFixture
) -> None:
    limiter = trio.CapacityLimiter(1)
    found = await trio.to_thread.run_sync(
        choose_backend, Settings(backend="auto", ollama_url=sim.url), limiter
    )
    assert isinstance(found, OllamaBackend)
    missing = await trio.to_thread.run_sync(
        choose_backend, Settings(backend="auto", ollama_url="http://127.0.0.1:9"), limiter
    )
    assert isinstance(missing, SimBackend)
    lines = [r.getMessage() for r in caplog.records if r.getMessage() == "backend_selected"]
    assert len(lines) == 2
    reasons = [
        r.__dict__["jarvis_fields"]["reason"] for r in caplog.records if r.msg == "backend_selected"
    ]
    assert "answered at " + sim.url in reasons[0]
    assert "no Ollama at http://127.0.0.1:9" in reasons[1]


@deadline(30)
async def test_cancel_frees_a_thread_blocked_in_connect() -> None:
    """Found in review: an upstream whose accept queue is full (overloaded, or a
    black hole) left the thread in connect() until the connect timeout."""
    import socket

    from tests.support.fakes import job

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(8):  # fill the accept queue; the kernel then drops new SYNs
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(listener.getsockname())
        fillers.append(filler)
    await trio.sleep(0.1)
    host, port = listener.getsockname()
    limiter = trio.CapacityLimiter(4)
    backend = OllamaBackend(f"http://{host}:{port}", limiter=limiter, connect_timeout=20.0)

    class Nowhere:
        def opened(self, model: str | None = None) -> None:
            raise AssertionError("never connected")

        async def send(self, text: Output) -> None:
            raise AssertionError("never connected")

    try:
        with trio.fail_after(10):  # 20 s connect timeout: only the shutdown can win
            with trio.move_on_after(0.5) as scope:
                await backend.generate(job("x"), Nowhere())
        assert scope.cancelled_caught
        assert limiter.borrowed_tokens == 0
    finally:
        await backend.aclose()
        for s in [listener, *fillers]:
            s.close()


ADD = {
    "type": "function",
    "function": {
        "name": "add",
        "parameters": {
            "type": "object",
            "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
        },
    },
}
PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgAAIAAAUAAXpeqz8AAAAASUVORK5CYII="
)


@deadline(20)
async def test_openai_fields_are_mapped_to_ollamas_chat(
    start_server: StartServer, sim: OllamaSim
) -> None:
    """What /api/chat receives, for each field of the mapping table (docs/reference/api.md)."""
    server, _ = await gateway(start_server, sim)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}}
    body = {
        "model": MODEL,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "3"},
        ],
        "tools": [ADD],
        "response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}},
        "reasoning_effort": "low",
        "logprobs": True,
        "top_logprobs": 2,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "top_k": 20,
        "max_completion_tokens": 8,
        "seed": 3,
        "user": "not sent",
    }
    async with server.client() as client:
        r = await client.post(CHAT, json=body)
    assert r.status_code == 200, r.text
    sent = (await sim.wait_request(lambda q: q.path == "/api/chat")).body
    assert sent is not None
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "what is this?", "images": [PNG_B64]},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "add", "arguments": {"a": 1, "b": 2}}}],
        },
        {"role": "tool", "content": "3", "tool_name": "add"},
    ]
    assert sent["tools"] == [ADD]
    assert sent["format"] == schema
    assert sent["think"] == "low"
    assert (sent["logprobs"], sent["top_logprobs"]) == (True, 2)
    assert sent["options"] == {
        "seed": 3,
        "num_predict": 8,
        "frequency_penalty": 0.5,
        "presence_penalty": 0.25,
        "top_k": 20,
    }
    assert "user" not in sent
    # Ollama's thinking and logprobs come back in OpenAI's names.
    message = r.json()["choices"][0]["message"]
    assert message["reasoning_content"] == "Thinking it over."
    assert r.json()["choices"][0]["logprobs"]["content"][0]["logprob"] == -0.25


@deadline(30)
async def test_a_tool_round_trip_through_ollama(start_server: StartServer, sim: OllamaSim) -> None:
    server, limiter = await gateway(start_server, sim)
    question = {"role": "user", "content": 'use add {"a": 2, "b": 3}'}
    async with server.client() as client:
        first = await client.post(
            CHAT, json=chat(MODEL, stream=False, tools=[ADD]) | {"messages": [question]}
        )
        choice = first.json()["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        call = choice["message"]["tool_calls"][0]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}
        result = {"role": "tool", "tool_call_id": call["id"], "content": "5"}
        body = chat(MODEL, tools=[ADD]) | {"messages": [question, choice["message"], result]}
        async with client.stream("POST", CHAT, json=body) as r:
            events = await read_all_events(r)
        assert "add returned 5" in text_of(events)
        async with client.stream(
            "POST", CHAT, json=chat(MODEL, tools=[ADD]) | {"messages": [question]}
        ) as r:
            streamed = await read_all_events(r)
    calls = [
        c["choices"][0]["delta"]["tool_calls"]
        for c in streamed
        if isinstance(c, dict) and c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls and calls[0][0]["function"]["name"] == "add"
    assert streamed[-2]["choices"][0]["finish_reason"] == "tool_calls"
    await all_closed(sim, limiter)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("logit_bias", {"50256": -100}),
        ("tool_choice", "required"),
        ("parallel_tool_calls", False),
        ("service_tier", "flex"),
        ("no_such_field", 1),
    ],
)
@deadline(20)
async def test_what_ollama_cannot_do_is_a_400_that_supersedes_nothing(
    start_server: StartServer, sim: OllamaSim, field: str, value: Any
) -> None:
    server, _ = await gateway(start_server, sim)
    headers = {"X-Session-Id": "keep"}
    extra: dict[str, Any] = {field: value}
    if field == "tool_choice":
        extra["tools"] = [ADD]
    async with server.client() as ca, server.client() as cb:
        long = chat(MODEL + "+tokens=20")
        async with ca.stream("POST", CHAT, json=long, headers=headers) as a:
            events = sse_events(a)
            await anext(events)
            await anext(events)
            r = await cb.post(CHAT, json=chat(MODEL) | extra, headers=headers)
            rest = [event async for event in events]
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["code"], error["param"]) == ("unsupported_parameter", field)
    assert field in error["message"]
    assert r.headers["x-should-retry"] == "false"
    assert rest[-2]["choices"][0]["finish_reason"] == "stop"  # A went on to its end
    assert "jarvis" not in rest[-2]


@deadline(20)
async def test_an_image_url_is_a_400_not_a_fetch(start_server: StartServer, sim: OllamaSim) -> None:
    server, _ = await gateway(start_server, sim)
    image = {"type": "image_url", "image_url": {"url": "http://127.0.0.1:9/cat.png"}}
    body = chat(MODEL) | {"messages": [{"role": "user", "content": [image]}]}
    async with server.client() as client:
        r = await client.post(CHAT, json=body)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "messages.0.content"
    assert "does not fetch" in r.json()["error"]["message"]
    assert not [q for q in sim.requests() if q.path == "/api/chat"]


@deadline(20)
async def test_json_mode_answers_json(start_server: StartServer, sim: OllamaSim) -> None:
    server, _ = await gateway(start_server, sim)
    async with server.client() as client:
        r = await client.post(
            CHAT, json=chat(MODEL, stream=False, response_format={"type": "json_object"})
        )
    assert isinstance(json.loads(r.json()["choices"][0]["message"]["content"]), dict)
    sent = (await sim.wait_request(lambda q: q.path == "/api/chat")).body
    assert sent is not None and sent["format"] == "json"
