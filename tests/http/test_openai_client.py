"""The official openai client, streaming and not, reads every ending without crashing."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any, cast

import openai
import pydantic
import pytest
import trio

from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from tests.conftest import RunningServer, StartServer
from tests.support.fakes import FakeBackend
from tests.support.helpers import ADD, deadline

MODEL = "jarvis-sim"
# A 1x1 PNG, as a client would attach a screenshot.
PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfab"
        "d40000000049454e44ae426082"
    )
).decode()


def make_client(server: RunningServer) -> openai.OpenAI:
    # The client's defaults (two retries of 408, 409, 429 and >= 500 among them): the
    # gateway's x-should-retry must keep a superseded or stopped call from coming back.
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=10)


@deadline(20)
async def test_streaming_and_non_streaming(server: RunningServer) -> None:
    client = make_client(server)

    def run() -> tuple[str, str | None, str, int]:
        completion = client.chat.completions.create(
            model="jarvis-sim", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        stream = client.chat.completions.create(
            model="jarvis-sim",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        assert usage is not None
        content = completion.choices[0].message.content or ""
        return content, completion.choices[0].finish_reason, text, usage.completion_tokens

    content, finish, text, tokens = await trio.to_thread.run_sync(run)
    assert len(content.split()) == 4
    assert finish == "length"
    assert len(text.split()) == 4
    assert tokens == 4
    models = await trio.to_thread.run_sync(lambda: [m.id for m in client.models.list()])
    assert models == ["jarvis-sim"]


@deadline(30)
async def test_superseded_endings_are_read_without_crashing(start_server: StartServer) -> None:
    """A stream superseded mid-answer, a waiting one superseded before it started,
    and a non-streaming one superseded (a typed 409)."""
    server = await start_server(FakeBackend(interval=0.02, tokens=40, die_after={"A": 0.6}))
    client = make_client(server)
    session = {"X-Session-Id": "oa"}

    def stream(prompt: str) -> list[openai.types.chat.ChatCompletionChunk]:
        return list(
            client.chat.completions.create(
                model="fake",
                messages=[{"role": "user", "content": prompt}],
                stream=True,
                extra_headers=session,
            )
        )

    def blocking(prompt: str) -> object:
        return client.chat.completions.create(
            model="fake", messages=[{"role": "user", "content": prompt}], extra_headers=session
        )

    results: dict[str, object] = {}
    async with trio.open_nursery() as nursery:

        async def run(name: str, fn: object, prompt: str) -> None:
            try:
                results[name] = await trio.to_thread.run_sync(fn, prompt)  # type: ignore[arg-type]
            except openai.APIStatusError as exc:
                results[name] = exc

        nursery.start_soon(run, "A", stream, "A")
        await trio.sleep(0.3)
        nursery.start_soon(run, "B", stream, "B")  # waits for A's 0.6 s death...
        await trio.sleep(0.2)
        nursery.start_soon(run, "C", blocking, "C")  # ...and is superseded by C
        await trio.sleep(0.1)
        nursery.start_soon(run, "D", stream, "D")  # which D supersedes in turn

    a, b, c = results["A"], results["B"], results["C"]
    # OpenAI's finish_reason, which every client parses; why it ended in the extension.
    assert isinstance(a, list) and a[-1].choices[0].finish_reason == "stop"
    assert a[-1].model_extra == {"jarvis": {"outcome": "superseded"}}
    assert isinstance(b, list) and b[-1].choices[0].finish_reason == "stop"
    assert b[-1].model_extra == {"jarvis": {"outcome": "superseded"}}
    assert "".join(ch.choices[0].delta.content or "" for ch in b) == ""
    assert isinstance(c, openai.ConflictError)
    assert c.body == {
        "message": "A newer request in this session superseded this one.",
        "type": "superseded",
        "param": None,
        "code": "superseded",
    }
    d = results["D"]
    assert isinstance(d, list) and d[-1].choices[0].finish_reason == "stop"


@deadline(10)
async def test_errors_map_to_typed_exceptions(server: RunningServer) -> None:
    client = make_client(server)

    def bad() -> None:
        client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])

    with pytest.raises(openai.NotFoundError):
        await trio.to_thread.run_sync(bad)


@pytest.fixture
async def sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=100.0))
    return started


async def ollama_gateway(start_server: StartServer, sim: OllamaSim) -> RunningServer:
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(8), connect_timeout=2.0)
    return await start_server(backend)


def chat_requests(sim: OllamaSim) -> int:
    return len([r for r in sim.requests() if r.path == "/api/chat"])


@deadline(30)
async def test_a_stopped_non_streaming_call_is_a_conflict_the_client_does_not_retry(
    start_server: StartServer, sim: OllamaSim
) -> None:
    """At its default settings the client retries a 409 twice; ``x-should-retry: false``
    keeps it from restarting the answer the user stopped."""
    server = await ollama_gateway(start_server, sim)
    client = make_client(server)
    outcome: dict[str, Any] = {}

    def ask() -> object:
        return client.chat.completions.create(
            model="llama3.2:1b+tokens=1000",
            messages=[{"role": "user", "content": "a long answer"}],
            extra_headers={"X-Session-Id": "stop-me"},
        )

    async def call() -> None:
        try:
            outcome["answer"] = await trio.to_thread.run_sync(ask)
        except openai.APIStatusError as exc:
            outcome["error"] = exc
            outcome["at"] = trio.current_time()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await sim.wait_request(lambda r: r.path == "/api/chat" and r.tokens_sent > 0)
        async with server.client() as c:
            stop = await c.post("/v1/sessions/stop-me/cancel")
        stopped_at = trio.current_time()
    assert stop.json()["result"] == "finished_cleanly"
    error = outcome.get("error")
    assert isinstance(error, openai.ConflictError), outcome
    assert error.response.headers["x-should-retry"] == "false"
    assert error.body == {
        "message": "The stream was stopped by a cancel request for its session.",
        "type": "stopped",
        "param": None,
        "code": "stopped",
    }
    assert outcome["at"] - stopped_at < 2.0  # not after a retry's backoff and answer
    await trio.sleep(1.0)  # a retry would be on its way to the upstream by now
    assert chat_requests(sim) == 1


@deadline(30)
async def test_two_non_streaming_calls_in_one_session_do_not_restart_each_other(
    start_server: StartServer, sim: OllamaSim
) -> None:
    server = await ollama_gateway(start_server, sim)
    client = make_client(server)
    results: dict[str, Any] = {}

    def ask(prompt: str, model: str) -> object:
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": prompt}],
            extra_headers={"X-Session-Id": "pair"},
        )

    async def call(name: str, model: str) -> None:
        try:
            results[name] = await trio.to_thread.run_sync(ask, name, model)
        except openai.APIStatusError as exc:
            results[name] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, "A", "llama3.2:1b+tokens=1000")
        await sim.wait_request(lambda r: r.path == "/api/chat" and r.tokens_sent > 0)
        nursery.start_soon(call, "B", "llama3.2:1b+tokens=5")
    assert isinstance(results["A"], openai.ConflictError)
    assert results["A"].code == "superseded"
    assert results["B"].choices[0].finish_reason == "stop"
    assert chat_requests(sim) == 2  # one each: nothing was retried


@deadline(30)
async def test_a_tool_round_trip_streaming_and_not(server: RunningServer) -> None:
    client = make_client(server)
    question: Any = {"role": "user", "content": 'use add {"a": 2, "b": 3}'}

    def whole() -> tuple[Any, str | None]:
        first = client.chat.completions.create(model=MODEL, messages=[question], tools=[ADD])
        assert first.choices[0].finish_reason == "tool_calls"
        message = first.choices[0].message
        assert message.content is None
        calls = message.tool_calls or []
        result: Any = {"role": "tool", "tool_call_id": calls[0].id, "content": "5"}
        second = client.chat.completions.create(
            model=MODEL, messages=[question, cast(Any, message), result], tools=[ADD]
        )
        return calls, second.choices[0].message.content

    def streamed() -> tuple[dict[int, dict[str, str]], str | None, str]:
        calls: dict[int, dict[str, str]] = {}
        finish = None
        for chunk in client.chat.completions.create(
            model=MODEL, messages=[question], tools=[ADD], stream=True
        ):
            choice = chunk.choices[0]
            finish = choice.finish_reason or finish
            for delta in choice.delta.tool_calls or ():
                call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                if delta.function is not None:
                    call["name"] += delta.function.name or ""
                    call["arguments"] += delta.function.arguments or ""
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[
                question,
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": calls[0]["id"],
                            "type": "function",
                            "function": {"name": "add", "arguments": calls[0]["arguments"]},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": calls[0]["id"], "content": "5"},
            ],
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
        return calls, finish, text

    calls, answer = await trio.to_thread.run_sync(whole)
    assert [c.function.name for c in calls] == ["add"]
    assert json.loads(calls[0].function.arguments) == {"a": 2, "b": 3}
    assert calls[0].id.startswith("call_")
    assert answer is not None and "add returned 5" in answer
    streamed_calls, finish, text = await trio.to_thread.run_sync(streamed)
    assert finish == "tool_calls"
    assert streamed_calls[0]["name"] == "add"
    assert json.loads(streamed_calls[0]["arguments"]) == {"a": 2, "b": 3}
    assert "add returned 5" in text


class Weather(pydantic.BaseModel):
    city: str
    celsius: float
    sunny: bool


@deadline(20)
async def test_structured_output_json_object_and_json_schema(server: RunningServer) -> None:
    client = make_client(server)

    def run() -> tuple[str | None, Weather | None]:
        plain = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "the weather, as JSON"}],
            response_format={"type": "json_object"},
        )
        parsed = client.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "the weather in Oslo"}],
            response_format=Weather,
        )
        return plain.choices[0].message.content, parsed.choices[0].message.parsed

    content, weather = await trio.to_thread.run_sync(run)
    assert isinstance(json.loads(content or ""), dict)
    assert isinstance(weather, Weather)


@deadline(20)
async def test_an_image_part_is_accepted(server: RunningServer) -> None:
    client = make_client(server)

    def run() -> str | None:
        answer = client.chat.completions.create(
            model=MODEL,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "what is in this picture?"},
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
                    ],
                }
            ],
        )
        return answer.choices[0].message.content

    assert await trio.to_thread.run_sync(run)


@deadline(20)
async def test_usage_arrives_on_every_ending(server: RunningServer) -> None:
    """A stream stopped mid-answer still reports what it produced."""
    client = make_client(server)
    stopped = trio.Event()

    def run() -> tuple[int, Any]:
        stream = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Long essay about AI"}],
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"X-Session-Id": "metered"},
        )
        pieces = 0
        chunks = []
        for chunk in stream:
            chunks.append(chunk)
            if chunk.choices and chunk.choices[0].delta.content:
                pieces += 1
                if pieces == 3:
                    trio.from_thread.run_sync(stopped.set)
        return pieces, chunks

    async def stop() -> None:
        await stopped.wait()
        async with server.client() as c:
            await c.post("/v1/sessions/metered/cancel")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop)
        pieces, chunks = await trio.to_thread.run_sync(run)
    assert chunks[-2].model_extra == {"jarvis": {"outcome": "stopped"}}
    usage = chunks[-1].usage
    # What the model produced: at least what the client read (the cancel may drop
    # pieces still buffered for it).
    assert usage is not None and usage.completion_tokens >= pieces >= 3


@deadline(10)
async def test_models_retrieve(server: RunningServer) -> None:
    client = make_client(server)
    model = await trio.to_thread.run_sync(client.models.retrieve, MODEL)
    assert model.id == MODEL and model.object == "model"
    with pytest.raises(openai.NotFoundError):
        await trio.to_thread.run_sync(client.models.retrieve, "nope")


@deadline(10)
async def test_an_empty_model_means_the_default(server: RunningServer) -> None:
    client = make_client(server)
    answer = await trio.to_thread.run_sync(
        lambda: client.chat.completions.create(
            model="", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    )
    assert answer.model == MODEL
