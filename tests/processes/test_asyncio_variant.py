"""The asyncio baseline (``benchmarks/asyncio_variant``), run as a real process.

It must speak our API byte for byte, and it must keep the notes' design with its
weaknesses: the tests of those weaknesses assert them as they are, so a benchmark
against it compares with the real thing, not with a quietly fixed one.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from benchmarks.asyncio_variant.registry import StreamEntry, StreamRegistry
from jarvis_trio.backends.sim import sim_pieces
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from jarvis_trio.schemas import parse_chat_request
from jarvis_trio.testing import open_server_process
from tests.conftest import log_lines
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    text_of,
)

REPO = Path(__file__).parents[2]
READY = re.compile(r"server_listening url=(http://\S+)")
MODEL = "llama3.2:1b"
SESSION = "anonymous/sess"  # the upstream trace header: owner/session, as ours
FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)')


@dataclass(frozen=True)
class LogEvent:
    name: str
    fields: dict[str, str]


@dataclass
class Variant:
    process: trio.Process
    url: str
    output: list[str] = field(default_factory=list)

    def events(self, name: str | None = None, **match: str) -> list[LogEvent]:
        """Our log events so far (``ts=… level=… NAME k=v …``), optionally filtered."""
        found = []
        for line in self.output:
            parts = line.split(" ", 3)
            if len(parts) < 3 or not parts[0].startswith("ts=") or "=" in parts[2]:
                continue
            event = LogEvent(parts[2], dict(FIELD.findall(parts[3] if len(parts) > 3 else "")))
            if name is not None and event.name != name:
                continue
            if all(event.fields.get(k) == v for k, v in match.items()):
                found.append(event)
        return found

    def index(self, name: str, **match: str) -> int:
        """The position of the first matching event in the log."""
        wanted = self.events(name, **match)[0]
        return self.events().index(wanted)


@asynccontextmanager
async def open_variant(*args: str) -> AsyncIterator[Variant]:
    """``python -m benchmarks.asyncio_variant --port 0 ARGS``, its stderr collected."""
    argv = [sys.executable, "-m", "benchmarks.asyncio_variant", "--port", "0", *args]
    async with open_server_process(argv, READY.pattern, cwd=REPO) as server:
        yield Variant(server.process, server.url, server.output)


class RunningSim:
    def __init__(self, sim: OllamaSim, scope: trio.CancelScope, done: trio.Event) -> None:
        self.sim = sim
        self._scope = scope
        self._done = done

    async def stop(self) -> None:
        """Stop serving: every connection is closed (so blocked reader threads wake up)."""
        self._scope.cancel()
        await self._done.wait()


@asynccontextmanager
async def open_sim() -> AsyncIterator[RunningSim]:
    """Our Ollama simulator, in-process, at 100 tokens/s."""
    scope = trio.CancelScope()
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[OllamaSim]) -> None:
        try:
            with scope:
                await serve_ollama_sim(tokens_per_second=100.0, task_status=task_status)
        finally:
            done.set()

    async with trio.open_nursery() as nursery:
        sim: OllamaSim = await nursery.start(run)
        running = RunningSim(sim, scope, done)
        try:
            yield running
        finally:
            await running.stop()


def chat(model: str, content: str = "hello", *, stream: bool = True) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], "stream": stream}


async def until_first_token(events: AsyncIterator[Any]) -> None:
    async for event in events:
        if isinstance(event, dict) and event["choices"][0]["delta"].get("content"):
            return
    raise AssertionError("the stream ended before its first token")


def is_superseded(events: list[Any]) -> bool:
    last: dict[str, Any] = events[-2]
    return bool(
        events[-1] == "[DONE]"
        and outcome_of(last) == "superseded"
        and last["jarvis"] == {"outcome": "superseded"}
    )


# -- the API: ours ------------------------------------------------------------------------


@deadline(20)
async def test_it_speaks_our_api() -> None:
    async with (
        open_variant("--backend", "sim", "--sim-tokens-per-second", "2000") as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        health = await client.get("/healthz")
        assert health.json() == {"status": "ok", "backend": "sim", "sessions": 0, "live_streams": 0}
        assert health.headers["x-request-id"].startswith("req-")
        models = (await client.get("/v1/models")).json()
        assert models["data"][0]["id"] == "jarvis-sim"

        body = {**chat("jarvis-sim", "Say hello"), "stream_options": {"include_usage": True}}
        headers = {"X-Session-Id": "api", "X-Request-Id": "my-request"}
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            events = await read_all_events(r)
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["x-session-id"] == "api"
        assert r.headers["x-request-id"] == "my-request"
        stream_id = r.headers["x-stream-id"]
        chunks = [e for e in events if isinstance(e, dict)]
        assert {c["id"] for c in chunks} == {stream_id}
        assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
        assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
        assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
        assert events[-1] == "[DONE]"
        # The same text as our embedded model: the pure core is shared.
        job = parse_chat_request(httpx.Request("POST", "/", json=body).content)
        assert text_of(events) == "".join(sim_pieces(job.to_generation("jarvis-sim")))

        plain = await client.post("/v1/chat/completions", json={"prompt": "hi", "max_tokens": 3})
        completion = plain.json()
        assert completion["object"] == "chat.completion"
        assert completion["id"] == plain.headers["x-stream-id"]
        assert completion["choices"][0]["finish_reason"] == "length"
        assert completion["usage"]["completion_tokens"] == 3

        def error_of(response: httpx.Response) -> tuple[int, str | None]:
            return response.status_code, response.json()["error"]["code"]

        url = "/v1/chat/completions"
        assert error_of(await client.post(url, content=b"{bad")) == (400, "invalid_json")
        assert error_of(await client.post(url, json={"prompt": "hi", "n": 2}))[0] == 400
        assert error_of(await client.post(url, json=chat("nope"))) == (404, "model_not_found")
        bad_session = {"X-Session-Id": "no spaces"}
        assert error_of(await client.post(url, json=chat("jarvis-sim"), headers=bad_session)) == (
            400,
            "invalid_header",
        )
        assert error_of(await client.get("/nowhere")) == (404, "not_found")
        assert error_of(await client.get(url)) == (405, "method_not_allowed")
        stop = (await client.post("/v1/sessions/idle/cancel")).json()
        assert stop == {
            "object": "session.cancel",
            "session_id": "idle",
            "result": "nothing_live",
            "stream_id": None,
            "waited_ms": 0.0,
        }


# -- the notes' design, where it works --------------------------------------------------


@deadline(20)
async def test_new_prompt_cancels_and_joins_the_old_one_on_a_chatty_upstream() -> None:
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        session = {"X-Session-Id": "sess"}
        url = "/v1/chat/completions"
        a_body = chat(MODEL + "+tokens=1000")
        async with client.stream("POST", url, json=a_body, headers=session) as a:
            a_events = sse_events(a)
            await until_first_token(a_events)
            b_body = chat(MODEL + "+tokens=3")
            async with client.stream("POST", url, json=b_body, headers=session) as b:
                b_events = await read_all_events(b)
            a_rest = [e async for e in a_events]
        assert is_superseded(a_rest)
        assert b_events[-2]["choices"][0]["finish_reason"] == "stop"
        assert text_of(b_events)

        a_id, b_id = a.headers["x-stream-id"], b.headers["x-stream-id"]
        await eventually(lambda: bool(variant.events("stream_end", trace=b_id)))
        assert variant.events("stream_cancelled", trace=a_id)[0].fields["reason"] == "superseded"
        assert (
            variant.index("stream_cancelled", trace=a_id)
            < variant.index("prev_stream_finished_cleanly", trace=a_id, session="sess")
            < variant.index("stream_start", trace=b_id, session="sess")
        )
        assert variant.events("stream_end", trace=a_id)[0].fields["outcome"] == "superseded"
        assert not variant.events("prev_stream_timeout_on_cancel")


@deadline(20)
async def test_superseded_plain_request_gets_409_and_stop_joins_the_stream() -> None:
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        session = {"X-Session-Id": "sess"}
        url = "/v1/chat/completions"
        answers: list[httpx.Response] = []

        async def plain_a() -> None:
            body = chat(MODEL + "+tokens=1000", stream=False)
            answers.append(await client.post(url, json=body, headers=session))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(plain_a)
            await upstream.sim.wait_request(lambda r: r.model == MODEL + "+tokens=1000")
            b_body = chat(MODEL + "+tokens=1000")
            async with client.stream("POST", url, json=b_body, headers=session) as b:
                b_events = sse_events(b)
                await until_first_token(b_events)
                stop = (await client.post("/v1/sessions/sess/cancel")).json()
                b_rest = [e async for e in b_events]
        assert answers[0].status_code == 409
        assert answers[0].json()["error"]["type"] == "superseded"

        assert stop["result"] == "finished_cleanly"
        assert stop["stream_id"] == b.headers["x-stream-id"]
        assert stop["waited_ms"] < 1000
        assert outcome_of(b_rest[-2]) == "stopped"
        assert b_rest[-1] == "[DONE]"
        assert variant.events("stream_cancelled", trace=stop["stream_id"], reason="stopped")
        again = (await client.post("/v1/sessions/sess/cancel")).json()
        assert again["result"] == "nothing_live"


@pytest.mark.slow
@deadline(40)
async def test_seed_verification_snippet_passes_against_the_baseline() -> None:
    """The original notes' A-then-B check (``tests/processes/data/seed_000_verify.py.txt``), with
    only its hard-coded ``localhost:8000`` pointed at the baseline's port.

    Its requests send no ``"stream": true``, so A is a plain request that the snippet
    reads whole before it sends B; a fast sim pace keeps that short.
    """
    snippet = (REPO / "tests" / "processes" / "data" / "seed_000_verify.py.txt").read_text(
        encoding="utf-8"
    )
    assert snippet.count("http://localhost:8000/") == 2
    async with open_variant("--backend", "sim", "--sim-tokens-per-second", "400") as variant:
        pointed = snippet.replace("http://localhost:8000/", variant.url + "/")
        result = await trio.run_process(
            [sys.executable, "-c", pointed], capture_stdout=True, capture_stderr=True
        )
        assert len(variant.events("stream_start")) == 2  # A, then B, in one session
        (a_start, b_start) = variant.events("stream_start")
        assert a_start.fields["session"] == b_start.fields["session"]
    out = result.stdout.decode()
    assert "[2/2] Sending prompt B..." in out
    assert "No hang = fix works!" in out, out + result.stderr.decode()


# -- the notes' design, where it does not: its weaknesses, asserted as they are -----------


@deadline(20)
async def test_silent_upstream_join_reports_clean_while_its_thread_stays_blocked() -> None:
    """The weakness the benchmark measures: cancel never reaches a silent upstream.

    Cancelling A's task abandons its ``asyncio.to_thread`` call, so the task ends at
    once: B waits milliseconds, not the 2 s budget, and the join is logged as clean.
    But A's thread is still blocked in ``recv()``: its upstream connection stays
    open, and the upstream serves both of the session's requests at once.
    """
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        sim = upstream.sim
        session = {"X-Session-Id": "sess"}
        url = "/v1/chat/completions"
        a_model = MODEL + "+stall_after=1"
        async with client.stream("POST", url, json=chat(a_model), headers=session) as a:
            a_events = sse_events(a)
            await until_first_token(a_events)
            sent_b = trio.current_time()
            b_body = chat(MODEL + "+tokens=3")
            async with client.stream("POST", url, json=b_body, headers=session) as b:
                await read_all_events(b)
            b_took = trio.current_time() - sent_b
            a_rest = [e async for e in a_events]
        assert is_superseded(a_rest)
        assert b_took < 1.0  # no 2 s wait: there was nothing left to wait for
        a_id, b_id = a.headers["x-stream-id"], b.headers["x-stream-id"]
        await eventually(lambda: bool(variant.events("stream_end", trace=b_id)))
        assert variant.events("prev_stream_finished_cleanly", trace=a_id)
        assert not variant.events("prev_stream_timeout_on_cancel")

        await trio.sleep(0.5)
        (a_request,) = [r for r in sim.requests() if r.model == a_model]
        assert a_request.outcome is None  # still being "answered"
        assert sim.record(a_request.conn).closed is None  # the thread still holds it
        assert sim.stats().session_peak[SESSION] == 2  # A's and B's upstream requests at once
        health = (await client.get("/healthz")).json()
        assert health["live_streams"] == 0  # the registry has forgotten A; its thread has not


@deadline(20)
async def test_superseded_stream_whose_model_was_loading_reads_its_whole_answer() -> None:
    """The ``finally`` clears the flag long before the thread can look at it."""
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        sim = upstream.sim
        session = {"X-Session-Id": "sess"}
        url = "/v1/chat/completions"
        a_model = MODEL + "+stall_headers=1+tokens=10"  # loads for 1 s, then answers
        async with client.stream("POST", url, json=chat(a_model), headers=session) as a:
            await sim.wait_request(lambda r: r.model == a_model)
            async with client.stream("POST", url, json=chat(MODEL + "+tokens=3"), headers=session):
                pass
            assert is_superseded(await read_all_events(a))
        await sim.wait_until(
            lambda: any(r.model == a_model and r.ended is not None for r in sim.requests())
        )
        (a_request,) = [r for r in sim.requests() if r.model == a_model]
        assert (a_request.outcome, a_request.tokens_sent) == ("completed", 10)
        assert variant.events("stream_end", trace=a.headers["x-stream-id"], outcome="superseded")


@deadline(20)
async def test_client_disconnect_ends_the_task_but_not_the_upstream_read() -> None:
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        sim = upstream.sim
        a_model = MODEL + "+tokens=40"
        async with client.stream("POST", "/v1/chat/completions", json=chat(a_model)) as a:
            await until_first_token(sse_events(a))
        # Starlette saw http.disconnect and cancelled the body; no one set the flag.
        a_id = a.headers["x-stream-id"]
        await eventually(lambda: bool(variant.events("stream_end", trace=a_id)))
        assert variant.events("stream_end", trace=a_id)[0].fields["outcome"] == "disconnected"
        assert not variant.events("stream_cancelled", trace=a_id)
        await sim.wait_until(
            lambda: any(r.model == a_model and r.ended is not None for r in sim.requests())
        )
        (a_request,) = [r for r in sim.requests() if r.model == a_model]
        assert (a_request.outcome, a_request.tokens_sent) == ("completed", 40)


@pytest.mark.slow
@deadline(20)
async def test_silent_upstreams_use_up_the_executor_and_hold_shutdown() -> None:
    """The notes' hang, back: blocked threads add up until no answer can start.

    ``asyncio.to_thread`` runs on the default executor, ``min(32, cpu + 4)``
    threads. Once that many readers are blocked on silent upstreams, a new request
    waits for a thread forever (health checks, which need none, still answer),
    and SIGTERM waits for it too, until the upstream finally closes.
    """
    workers = min(32, (os.cpu_count() or 1) + 4)
    async with (
        open_sim() as upstream,
        open_variant("--backend", "ollama", "--ollama-url", upstream.sim.url) as variant,
        httpx.AsyncClient(base_url=variant.url, timeout=10) as client,
    ):
        url = "/v1/chat/completions"
        for i in range(workers):
            body = chat(MODEL + "+stall_after=1", f"A{i}")
            async with client.stream("POST", url, json=body) as a:
                await until_first_token(sse_events(a))  # ... then disconnect
        assert upstream.sim.stats().live_requests == workers

        b_events: list[Any] = []
        got_token = False
        async with trio.open_nursery() as nursery:

            async def b() -> None:
                nonlocal got_token
                async with client.stream("POST", url, json=chat(MODEL + "+tokens=3")) as r:
                    async for event in sse_events(r):
                        b_events.append(event)
                        got_token = got_token or bool(text_of([event]))

            nursery.start_soon(b)
            await trio.sleep(1.0)
            assert not got_token  # B waits for an executor thread
            health = await client.get("/healthz")
            assert health.json()["live_streams"] == 1

            variant.process.terminate()
            await trio.sleep(1.0)
            assert variant.process.returncode is None  # uvicorn waits for B's response

            await upstream.stop()  # the silent upstreams close: threads wake up
            with trio.fail_after(5):
                await variant.process.wait()
        # B got its turn only once the upstream was gone: an error event, then [DONE].
        assert b_events[-1] == "[DONE]"
        assert b_events[-2]["error"]["code"] in ("upstream_unreachable", "upstream_disconnected")


# -- the registry alone: what the notes leave open --------------------------------------


def run_asyncio(scenario: Any) -> Any:
    """Run an asyncio scenario with an absolute deadline."""

    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), timeout=5)

    return asyncio.run(bounded())


def test_registry_has_no_latest_wins(caplog: pytest.LogCaptureFixture) -> None:
    """C arrives while B waits for A: both start, and the session forgets one of them."""

    async def scenario() -> StreamRegistry:
        registry = StreamRegistry(prev_stream_timeout=2.0)

        def entry(trace: str) -> StreamEntry:  # a stream that just runs
            return StreamEntry(trace, "s", asyncio.create_task(asyncio.sleep(60)))

        async def stream_a() -> None:
            try:
                await asyncio.sleep(60)
            finally:  # the notes' finally, slower than usual (e.g. a slow client)
                await asyncio.sleep(0.2)
                await registry.pop("A")

        await registry.register(StreamEntry("A", "s", asyncio.create_task(stream_a())))
        await asyncio.sleep(0)  # A is running
        b = asyncio.create_task(registry.register(entry("B")))
        await asyncio.sleep(0.05)  # B has cancelled A and waits for it
        c = asyncio.create_task(registry.register(entry("C")))
        await asyncio.gather(b, c)
        return registry

    registry = run_asyncio(scenario)
    lines = log_lines(caplog)
    # C found A still registered, cancelled it again, and so cut A's finally short.
    assert lines.count("stream_cancelled trace=A reason=superseded") == 2
    assert lines.count("prev_stream_finished_cleanly session=s trace=A") == 2
    # Both waits end together (B's first): B finds A's entry (never popped), and
    # C finds B's; the session now points at C, and B can be neither superseded
    # nor stopped.
    assert [line for line in lines if line.startswith("session_entry_overwritten")] == [
        "session_entry_overwritten session=s trace=B replaced=A",
        "session_entry_overwritten session=s trace=C replaced=B",
    ]
    # B and C are both registered (both stream); A, whose pop never ran, too.
    assert registry.statistics().live_streams == 3
    assert registry.statistics().sessions == 1


def test_registry_join_timeout(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> float:
        registry = StreamRegistry(prev_stream_timeout=0.1)

        async def stubborn() -> None:
            try:
                await asyncio.sleep(60)
            except asyncio.CancelledError:
                await asyncio.sleep(60)  # cleanup that only a second cancel ends

        await registry.register(StreamEntry("A", "s", asyncio.create_task(stubborn())))
        await asyncio.sleep(0)  # A is running
        loop = asyncio.get_running_loop()
        started = loop.time()
        b_task = asyncio.create_task(asyncio.sleep(60))
        await registry.register(StreamEntry("B", "s", b_task))
        b_task.cancel()
        return loop.time() - started

    waited = run_asyncio(scenario)
    assert 0.1 <= waited < 1.0
    assert "prev_stream_timeout_on_cancel session=s trace=A" in log_lines(caplog)
