"""LiteLLM and LangChain as clients, at their default settings: tools, structured
output, and a superseded stream they read without error."""

from __future__ import annotations

import functools
import importlib
import operator
import os
from typing import Any

import pydantic
import trio

from tests.conftest import RunningServer
from tests.support.helpers import ADD, deadline

# LiteLLM fetches its model price list from the network at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

MODEL = "jarvis-sim"
ASK_ADD = 'use add {"a": 2, "b": 3}'


def litellm() -> Any:
    return importlib.import_module("litellm")


def chat_openai(server: RunningServer) -> Any:
    module = importlib.import_module("langchain_openai")
    return module.ChatOpenAI(base_url=server.url + "/v1", api_key="unused", model=MODEL)


def add(a: float, b: float) -> float:
    """Add two numbers."""
    return a + b


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


@deadline(60)
async def test_litellm_calls_tools_and_answers_the_result(server: RunningServer) -> None:
    def run() -> tuple[Any, str, str]:
        ask = [{"role": "user", "content": ASK_ADD}]
        first = litellm().completion(
            model=f"openai/{MODEL}",
            api_base=server.url + "/v1",
            api_key="unused",
            messages=ask,
            tools=[ADD],
        )
        message = first.choices[0].message
        call = message.tool_calls[0]
        second = litellm().completion(
            model=f"openai/{MODEL}",
            api_base=server.url + "/v1",
            api_key="unused",
            messages=[
                *ask,
                message.model_dump(),
                {"role": "tool", "tool_call_id": call.id, "content": "5"},
            ],
            tools=[ADD],
        )
        return call, first.choices[0].finish_reason, second.choices[0].message.content

    call, finish, answer = await trio.to_thread.run_sync(run)
    assert finish == "tool_calls"
    assert call.function.name == "add"
    assert call.function.arguments == '{"a": 2, "b": 3}'
    assert "add returned 5" in answer


@deadline(60)
async def test_langchain_bind_tools_and_structured_output(server: RunningServer) -> None:
    def run() -> tuple[Any, Any]:
        llm = chat_openai(server)
        called = llm.bind_tools([add]).invoke(ASK_ADD)
        weather = llm.with_structured_output(Weather).invoke("the weather in Oslo")
        return called.tool_calls, weather

    calls, weather = await trio.to_thread.run_sync(run)
    assert [(c["name"], c["args"]) for c in calls] == [("add", {"a": 2, "b": 3})]
    assert isinstance(weather, Weather)


@deadline(60)
async def test_a_superseded_stream_is_read_without_error(server: RunningServer) -> None:
    """LiteLLM and LangChain each read a stream that a newer prompt cut short."""
    headers = {"X-Session-Id": "frameworks"}
    started = trio.Event()

    def with_litellm() -> list[str | None]:
        stream = litellm().completion(
            model=f"openai/{MODEL}",
            api_base=server.url + "/v1",
            api_key="unused",
            messages=[{"role": "user", "content": "Long essay about AI"}],
            stream=True,
            extra_headers=headers,
        )
        reasons = []
        for chunk in stream:
            reasons.append(chunk.choices[0].finish_reason)
            if len(reasons) == 2:
                trio.from_thread.run_sync(started.set)
        return reasons

    def with_langchain() -> list[Any]:
        llm = chat_openai(server).bind(extra_headers=headers)
        chunks = []
        for chunk in llm.stream("Long essay about AI"):
            chunks.append(chunk)
            if len(chunks) == 2:
                trio.from_thread.run_sync(started.set)
        return chunks

    async def supersede() -> None:
        await started.wait()
        async with server.client() as client:
            r = await client.post(
                "/v1/chat/completions",
                json={"prompt": "hi", "max_tokens": 2},
                headers=headers,
            )
            assert r.status_code == 200

    for reader in (with_litellm, with_langchain):
        started = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supersede)
            out = await trio.to_thread.run_sync(reader)
        if reader is with_litellm:
            assert out[-1] == "stop"
        else:
            whole = functools.reduce(operator.add, out)  # LangChain merges its chunks so
            assert whole.response_metadata.get("finish_reason") == "stop"
        assert len(out) < 500  # cut short: the essay is 600 words (slack for a loaded machine)
