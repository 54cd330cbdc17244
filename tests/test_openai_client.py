"""The official openai client, streaming and not, reads every ending without crashing."""

from __future__ import annotations

import openai
import pytest
import trio

from tests.conftest import RunningServer, StartServer
from tests.fakes import FakeBackend
from tests.helpers import deadline


def make_client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=10)


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
    assert isinstance(a, list) and a[-1].choices[0].finish_reason == "superseded"
    assert a[-1].model_extra == {"jarvis": {"outcome": "superseded"}}
    assert isinstance(b, list) and b[-1].choices[0].finish_reason == "superseded"
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
