"""Ollama's API on the gateway, through the official ``ollama`` client at its defaults.

Against the embedded model, an OpenAI-compatible upstream (another jarvis-trio) and
the Ollama simulator; with sessions, supersede and Stop as on ``/v1``. The client is
synchronous, so each call runs in a worker thread.
"""

from __future__ import annotations

import base64
import json
import signal
import sys
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import ollama
import pytest
import trio

from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.backends.openai_compat import OpenAICompatBackend
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from jarvis_trio.testing import open_server_process
from tests.conftest import RunningServer, StartServer, log_lines
from tests.support.fake_openai import FakeOpenAI, serve_fake_openai
from tests.support.helpers import ADD, deadline, eventually, sse_events

MODEL = "jarvis-sim"
LONG = "Long essay about AI"
T = TypeVar("T")


def client(server: RunningServer, **headers: str) -> ollama.Client:
    return ollama.Client(host=server.url, headers=headers)


async def in_thread(fn: Callable[[], T]) -> T:
    return await trio.to_thread.run_sync(fn)


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "user", "content": text}]


@deadline(20)
async def test_chat_and_generate_streaming_and_not(server: RunningServer) -> None:
    c = client(server)

    def run() -> tuple[Any, list[Any], Any, list[Any]]:
        whole = c.chat(MODEL, messages=user("hi there"), stream=False, options={"num_predict": 4})
        parts = list(
            c.chat(MODEL, messages=user("hi there"), stream=True, options={"num_predict": 4})
        )
        generated = c.generate(MODEL, "hi", options={"num_predict": 3, "seed": 1})
        streamed = list(c.generate(MODEL, "hi", stream=True, options={"num_predict": 3, "seed": 1}))
        return whole, parts, generated, streamed

    whole, parts, generated, streamed = await in_thread(run)
    assert whole.done and whole.done_reason == "length"
    assert whole.message.role == "assistant"
    assert len(whole.message.content.split()) == 4
    assert whole.eval_count == 4 and whole.prompt_eval_count == 2
    assert whole.total_duration >= whole.eval_duration > 0
    assert "".join(p.message.content for p in parts) == whole.message.content  # deterministic
    assert [p.done for p in parts] == [False] * 4 + [True]
    assert parts[-1].done_reason == "length" and parts[-1].message.content == ""
    assert parts[-1].model == MODEL and parts[-1].created_at
    assert generated.response == "".join(p.response for p in streamed)
    assert streamed[-1].done_reason == "length"
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    shaped = await in_thread(partial(c.generate, MODEL, "a number", format=schema))
    assert isinstance(json.loads(shaped.response or "")["n"], int)


@deadline(20)
async def test_the_wire_is_ollamas(server: RunningServer) -> None:
    async with server.client() as http:
        body = {"model": MODEL, "messages": user("hi"), "options": {"num_predict": 2}}
        async with http.stream("POST", "/api/chat", json=body) as r:
            assert r.headers["content-type"] == "application/x-ndjson"
            assert r.headers["x-stream-id"].startswith("chatcmpl-")
            lines = [json.loads(line) async for line in r.aiter_lines() if line]
        assert set(lines[0]) == {"model", "created_at", "message", "done"}
        assert set(lines[-1]) == {
            "model",
            "created_at",
            "message",
            "done",
            "done_reason",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration",
        }
        whole = await http.post(
            "/api/generate", json={"model": MODEL, "prompt": "x", "stream": False}
        )
        assert whole.headers["content-type"].startswith("application/json")
        assert whole.json()["done"] is True
        version = await http.get("/api/version")
        assert version.json() == {"version": "0.1.0"}
        load = await http.post("/api/chat", json={"model": MODEL, "messages": []})
        assert load.json()["done_reason"] == "load"
        unload = await http.post("/api/generate", json={"model": MODEL, "keep_alive": 0})
        assert unload.json()["done_reason"] == "unload"
        assert unload.json()["response"] == ""


@deadline(20)
async def test_list_show_and_ps(server: RunningServer) -> None:
    c = client(server)
    listed = await in_thread(c.list)
    assert [m.model for m in listed.models] == [MODEL]
    assert listed.models[0].digest and listed.models[0].modified_at
    shown = await in_thread(partial(c.show, MODEL))
    assert shown.capabilities == ["completion", "tools"]
    assert shown.details is not None and shown.modelinfo == {}
    assert (await in_thread(partial(c.show, MODEL + ":latest"))).capabilities
    with pytest.raises(ollama.ResponseError) as missing:
        await in_thread(partial(c.show, "nope"))
    assert missing.value.status_code == 404
    assert missing.value.error == "model 'nope' not found"
    assert (await in_thread(c.ps)).models == []
    # A live stream's model is "running".
    async with server.client() as http:
        body = {"model": MODEL, "messages": user(LONG)}
        async with http.stream("POST", "/api/chat", json=body) as r:
            lines = r.aiter_lines()
            await anext(lines)
            running = await in_thread(c.ps)
            assert [m.model for m in running.models] == [MODEL]
            assert running.models[0].expires_at is not None


@deadline(20)
async def test_errors_are_ollamas(server: RunningServer) -> None:
    c = client(server)
    with pytest.raises(ollama.ResponseError) as unknown:
        await in_thread(partial(c.chat, "no-such-model", messages=user("hi")))
    assert (unknown.value.status_code, unknown.value.error) == (
        404,
        "model 'no-such-model' not found",
    )
    with pytest.raises(ollama.ResponseError) as bad:
        await in_thread(partial(c.generate, MODEL, "hi", options={"temperature": "warm"}))
    assert bad.value.status_code == 400
    assert bad.value.error.startswith("options.temperature:")
    with pytest.raises(ollama.ResponseError) as refused:  # the sim has no log probabilities
        await in_thread(partial(c.chat, MODEL, messages=user("hi"), logprobs=True))
    assert refused.value.status_code == 400 and "logprobs" in refused.value.error
    with pytest.raises(ollama.ResponseError) as embed:
        await in_thread(partial(c.embed, MODEL, "some text"))
    assert embed.value.status_code == 501 and "does not support embeddings" in embed.value.error
    with pytest.raises(ollama.ResponseError) as embed_unknown:
        await in_thread(partial(c.embed, "nope", "some text"))
    assert embed_unknown.value.status_code == 404
    async with server.client() as http:
        wrong = await http.get("/api/chat")
        assert wrong.status_code == 405 and "error" in wrong.json()
        empty = await http.post("/api/chat", content=b"")
        assert empty.status_code == 400 and isinstance(empty.json()["error"], str)


def read_until_done(
    stream: Iterator[Any], started: Callable[[], None], text: Callable[[Any], str]
) -> tuple[str, Any]:
    """Read a streamed answer; call ``started`` after the first part."""
    parts = []
    for i, part in enumerate(stream):
        parts.append(part)
        if i == 0:
            trio.from_thread.run_sync(started)
    return "".join(text(p) for p in parts), parts[-1]


@pytest.mark.parametrize("kind", ["chat", "generate"])
@deadline(20)
async def test_a_new_prompt_supersedes_the_ollama_stream(server: RunningServer, kind: str) -> None:
    c = client(server, **{"X-Session-Id": "demo"})
    started = trio.Event()
    ended: list[tuple[str, Any]] = []

    def first() -> None:
        if kind == "chat":
            chat = c.chat(MODEL, messages=user(LONG), stream=True)
            ended.append(read_until_done(chat, started.set, lambda p: p.message.content))
        else:
            generate = c.generate(MODEL, LONG, stream=True)
            ended.append(read_until_done(generate, started.set, lambda p: p.response))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread, first)
        await started.wait()
        second = await in_thread(
            partial(c.chat, MODEL, messages=user("What is 2+2?"), options={"num_predict": 3})
        )
    text, last = ended[0]
    assert last.done is True and last.done_reason == "superseded"
    assert last.eval_count == len(text.split()) > 0
    assert second.done_reason == "length"
    assert server.manager.statistics().live_streams == 0


@deadline(20)
async def test_stop_ends_the_ollama_stream_as_stopped(server: RunningServer) -> None:
    c = client(server, **{"X-Session-Id": "stop-me"})
    started = trio.Event()
    ended: list[tuple[str, Any]] = []

    def read() -> None:
        stream = c.generate(MODEL, LONG, stream=True)
        ended.append(read_until_done(stream, started.set, lambda p: p.response))

    async with trio.open_nursery() as nursery, server.client() as http:
        nursery.start_soon(in_thread, read)
        await started.wait()
        stop = await http.post("/v1/sessions/stop-me/cancel")
        assert stop.json()["result"] == "finished_cleanly"
    assert ended[0][1].done_reason == "stopped"


@deadline(20)
async def test_a_superseded_non_streaming_call_says_why(server: RunningServer) -> None:
    c = client(server, **{"X-Session-Id": "quiet"})
    async with trio.open_nursery() as nursery:
        answers: list[Any] = []

        async def first() -> None:
            answers.append(await in_thread(partial(c.generate, MODEL, LONG)))

        nursery.start_soon(first)
        await eventually(lambda: server.manager.statistics().live_streams == 1)
        await trio.sleep(0.1)  # a few tokens in
        await in_thread(partial(c.generate, MODEL, "hi", options={"num_predict": 1}))
    assert answers[0].done and answers[0].done_reason == "superseded"
    assert answers[0].eval_count == len(answers[0].response.split()) > 0


@deadline(20)
async def test_tool_calls_round_trip(server: RunningServer) -> None:
    c = client(server)
    asked = user('use add {"a": 2, "b": 3}')

    def run() -> tuple[Any, list[Any], Any]:
        whole = c.chat(MODEL, messages=asked, tools=[ADD])
        parts = list(c.chat(MODEL, messages=asked, tools=[ADD], stream=True))
        call = (whole.message.tool_calls or [])[0]
        history: list[Any] = [
            *asked,
            whole.message,
            {"role": "tool", "content": "5", "tool_name": call.function.name},
        ]
        return whole, parts, c.chat(MODEL, messages=history, tools=[ADD])

    whole, parts, answer = await in_thread(run)
    call = (whole.message.tool_calls or [])[0]
    assert (call.function.name, dict(call.function.arguments)) == ("add", {"a": 2, "b": 3})
    assert whole.done_reason == "stop"
    streamed = [p for p in parts if p.message.tool_calls]
    assert len(streamed) == 1 and streamed[0].message.tool_calls[0].function.name == "add"
    assert "5" in answer.message.content


@deadline(20)
async def test_keys_apply_to_the_ollama_routes(start_server: StartServer) -> None:
    server = await start_server(api_keys=["k1"])
    with pytest.raises(ollama.ResponseError) as missing:
        await in_thread(client(server).list)
    assert missing.value.status_code == 401 and "API key" in missing.value.error
    keyed = client(server, Authorization="Bearer k1")
    assert [m.model for m in (await in_thread(keyed.list)).models] == [MODEL]
    answer = await in_thread(partial(keyed.generate, MODEL, "hi", options={"num_predict": 1}))
    assert answer.done


@deadline(30)
async def test_through_an_openai_compatible_upstream(start_server: StartServer) -> None:
    upstream = await start_server(sim_tokens_per_second=100.0)
    front = await start_server(OpenAICompatBackend(upstream.url + "/v1"))
    c = client(front, **{"X-Session-Id": "relay"})
    started = trio.Event()
    ended: list[tuple[str, Any]] = []

    def first() -> None:
        stream = c.chat(MODEL, messages=user(LONG), stream=True)
        ended.append(read_until_done(stream, started.set, lambda p: p.message.content))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(in_thread, first)
        await started.wait()
        whole = await in_thread(
            partial(c.generate, MODEL, "hi", options={"num_predict": 3, "top_k": 5})
        )
    assert ended[0][1].done_reason == "superseded"
    assert whole.done_reason == "length" and len((whole.response or "").split()) == 3
    assert whole.prompt_eval_count == 1 and whole.eval_count == 3  # the upstream's usage
    assert [m.model for m in (await in_thread(c.list)).models] == [MODEL]
    tool = await in_thread(
        partial(c.chat, MODEL, messages=user('use add {"a": 1, "b": 1}'), tools=[ADD])
    )
    assert dict((tool.message.tool_calls or [])[0].function.arguments) == {"a": 1, "b": 1}
    with pytest.raises(ollama.ResponseError) as unknown:
        await in_thread(partial(c.chat, "nope", messages=user("hi")))
    assert (unknown.value.status_code, unknown.value.error) == (404, "model 'nope' not found")
    await eventually(lambda: upstream.manager.statistics().live_streams == 0)


@pytest.fixture
async def ollama_sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=100.0))
    return started


@deadline(20)
async def test_through_ollama_the_request_arrives_as_sent(
    start_server: StartServer, ollama_sim: OllamaSim
) -> None:
    front = await start_server(OllamaBackend(ollama_sim.url, connect_timeout=2.0))
    c = client(front)
    options = {"num_predict": 4, "seed": 3, "top_k": 7, "num_ctx": 512, "use_mmap": False}
    answer = await in_thread(
        partial(
            c.chat,
            "llama3.2:1b",
            messages=user("hello"),
            options=options,
            keep_alive="1m",
            think=True,
        )
    )
    assert answer.message.thinking and answer.done_reason == "length"
    sent = ollama_sim.requests()[-1].body
    assert sent is not None
    assert sent["options"] == options
    assert (sent["keep_alive"], sent["think"]) == ("1m", True)
    assert sent["messages"] == user("hello")
    # The upstream's own listing is relayed: sizes, digests, details.
    listed = {m.model: m for m in (await in_thread(c.list)).models}
    llama = listed["llama3.2:1b"]
    assert llama.size == 1_321_098_329 and llama.details is not None
    assert (llama.details.family, llama.details.parameter_size) == ("llama", "1.2B")
    # /api/show is Ollama's own answer, relayed.
    shown = await in_thread(partial(c.show, "llama3.2:1b"))
    assert shown.details is not None and shown.details.quantization_level == "Q8_0"
    assert shown.modelinfo == {"general.architecture": "llama", "llama.context_length": 131072}
    assert shown.template == "{{ .Prompt }}"
    tiny = await in_thread(partial(c.show, "tinyllama"))  # no tag: ":latest"
    assert tiny.details is not None and tiny.details.parameter_size == "1B"
    with pytest.raises(ollama.ResponseError) as missing:
        await in_thread(partial(c.show, "nope"))
    assert (missing.value.status_code, missing.value.error) == (404, "model 'nope' not found")


@deadline(20)
async def test_a_client_that_leaves_cancels_the_stream(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"model": MODEL, "messages": user(LONG)}
    async with server.client() as http, http.stream("POST", "/api/chat", json=body) as r:
        lines = r.aiter_lines()
        await anext(lines)
        assert server.manager.statistics().live_streams == 1
        # Leaving the block closes the connection mid-stream.
    await eventually(lambda: server.manager.statistics().sessions == 0)
    stream_id = r.headers["x-stream-id"]
    assert f"stream_cancelled trace={stream_id} reason=disconnected" in log_lines(caplog)


@deadline(40)
async def test_shutdown_ends_the_ollama_stream_as_shutdown() -> None:
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0"]
    ready = r"server_listening url=(http://\S+)"
    async with (
        open_server_process(argv, ready) as server,
        httpx.AsyncClient(timeout=10) as http,
    ):
        body = {"model": MODEL, "prompt": LONG}
        async with http.stream("POST", server.url + "/api/generate", json=body) as r:
            lines = r.aiter_lines()
            assert json.loads(await anext(lines))["done"] is False
            server.process.send_signal(signal.SIGTERM)
            rest = [json.loads(line) async for line in lines if line]
        with trio.fail_after(10):
            assert await server.process.wait() == 0
    assert rest[-1]["done"] is True
    assert rest[-1]["done_reason"] == "shutdown"


@deadline(30)
async def test_upstream_failures_are_ollama_errors(
    start_server: StartServer, ollama_sim: OllamaSim
) -> None:
    backend = OllamaBackend(ollama_sim.url, connect_timeout=2.0)
    front = await start_server(backend, stream_inactivity_seconds=0.3, first_token_timeout=0.5)
    c = client(front)
    # A model that never answers: the first-token timeout, before anything was sent.
    with pytest.raises(ollama.ResponseError) as silent:
        await in_thread(lambda: list(c.generate("llama3.2:1b+stall_headers", "hi", stream=True)))
    assert silent.value.status_code == 504
    # A model that fails mid-answer: Ollama's error line after the pieces, which the
    # client raises.
    parts: list[Any] = []

    def read() -> None:
        parts.extend(c.chat("llama3.2:1b+error_after=2", messages=user("hi"), stream=True))

    with pytest.raises(ollama.ResponseError) as failed:
        await in_thread(read)
    assert "simulated failure" in failed.value.error
    # A model that goes quiet: the inactivity timeout; non-streaming, a 504.
    with pytest.raises(ollama.ResponseError) as quiet:
        await in_thread(partial(c.chat, "llama3.2:1b+stall_after=2", messages=user("hi")))
    assert quiet.value.status_code == 504
    with trio.fail_after(5):
        await ollama_sim.wait_until(lambda: ollama_sim.open_connections == 0)


@deadline(20)
async def test_a_resumable_ollama_stream_goes_on_for_a_viewer(server: RunningServer) -> None:
    headers = {"X-Session-Id": "resume", "X-Jarvis-Resume-Seconds": "5"}
    body = {"model": MODEL, "messages": user("hi there"), "options": {"num_predict": 30}}
    async with server.client() as http:
        async with http.stream("POST", "/api/chat", json=body, headers=headers) as r:
            first = json.loads(await anext(r.aiter_lines()))
        # The client left; the stream goes on, and a viewer gets all of it (as SSE).
        async with http.stream("GET", "/v1/sessions/resume/stream") as viewer:
            events = [e async for e in sse_events(viewer)]
    text = "".join(
        (e["choices"][0]["delta"].get("content") or "") for e in events[:-1] if e["choices"]
    )
    assert text.startswith(first["message"]["content"])
    assert len(text.split()) == 30
    assert events[-2]["choices"][0]["finish_reason"] == "length"


RELAYED: list[dict[str, Any]] = [
    {"choices": [{"index": 0, "delta": {"role": "assistant", "reasoning_content": "Let me see."}}]},
    {
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "call_9",
                            "type": "function",
                            "function": {"name": "add", "arguments": '{"a": '},
                        }
                    ]
                },
            }
        ]
    },
    {
        "choices": [
            {
                "index": 0,
                "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '1, "b": 2}'}}]},
            }
        ]
    },
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}},
]


@deadline(20)
async def test_an_openai_upstream_gets_openais_body_and_its_answer_comes_back_as_ollamas(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    fake: FakeOpenAI = await nursery.start(partial(serve_fake_openai, FakeOpenAI(RELAYED)))
    front = await start_server(OpenAICompatBackend(fake.url))
    c = client(front)
    png = bytes.fromhex("89504e470d0a1a0a") + bytes(16)
    asked: dict[str, Any] = {
        "messages": [{"role": "user", "content": "add 1 and 2", "images": [png]}],
        "tools": [ADD],
        "options": {"num_predict": 50, "top_k": 3, "num_ctx": 4096},
        "think": True,
        "keep_alive": "5m",
    }
    parts = await in_thread(lambda: list(c.chat("upstream-default", stream=True, **asked)))
    whole = await in_thread(partial(c.chat, "upstream-default", **asked))
    sent = fake.bodies[-1]
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "add 1 and 2"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]
    assert sent["tools"] == [ADD]
    assert (sent["max_tokens"], sent["top_k"]) == (50, 3)
    for only_ollama in ("think", "keep_alive", "options", "num_ctx", "num_predict"):
        assert only_ollama not in sent
    assert [p.message.thinking for p in parts if p.message.thinking] == ["Let me see."]
    calls = [p.message.tool_calls for p in parts if p.message.tool_calls]
    assert len(calls) == 1  # gathered from the upstream's fragments, sent whole
    assert calls[0] is not None and dict(calls[0][0].function.arguments) == {"a": 1, "b": 2}
    last = parts[-1]
    assert (last.done_reason, last.prompt_eval_count, last.eval_count) == ("stop", 5, 7)
    assert whole.message.thinking == "Let me see."
    assert whole.message.tool_calls is not None
    assert dict(whole.message.tool_calls[0].function.arguments) == {"a": 1, "b": 2}
