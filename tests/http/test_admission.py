"""Admission you can see: a bound on running streams, 429 past it, supersede still works."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest
import trio
import trio.testing

from jarvis_trio.admission import Admission, Admit, Refusal, Refuse
from jarvis_trio.config import Settings
from jarvis_trio.errors import ServiceUnavailable, TooManyRequests
from jarvis_trio.outcomes import Outcome
from jarvis_trio.rules import RuleError
from jarvis_trio.sessions import SessionManager
from tests.conftest import StartServer
from tests.http.test_metrics import scrape
from tests.support.fakes import FakeBackend, job
from tests.support.helpers import deadline, eventually, sse_events

CHAT = "/v1/chat/completions"
LONG = {"prompt": "Long essay about AI", "stream": True}
SHORT = {"prompt": "hi", "max_tokens": 2}

# -- the rules, pure


def test_admits_until_the_limit_then_refuses_with_retry_after() -> None:
    admission = Admission(limit=2, retry_after=1.5)
    for _ in range(2):
        assert admission.arrive(session_running=False) == Admit()
        admission.started()
    assert admission.full
    assert admission.arrive(session_running=False) == Refuse(Refusal.FULL, 1.5)
    assert admission.refused[Refusal.FULL] == 1
    admission.ended()
    assert admission.arrive(session_running=False) == Admit()


def test_a_session_that_runs_a_stream_is_never_refused_for_its_own_slot() -> None:
    admission = Admission(limit=1)
    assert admission.arrive(session_running=False) == Admit()
    admission.started()
    # Its next prompt supersedes it: admitted, full or not.
    assert admission.arrive(session_running=True) == Admit()
    # The old one is released, the new one starts: still one slot.
    admission.ended()
    admission.started()
    assert admission.running == 1
    assert admission.refused[Refusal.FULL] == 0


def test_zombies_overflow_the_limit_and_new_sessions_wait_until_they_end() -> None:
    admission = Admission(limit=1)
    admission.started()  # A
    admission.started()  # B, started beside A's zombie after the join ran out
    assert admission.running == 2
    assert isinstance(admission.arrive(session_running=False), Refuse)
    admission.ended()  # the zombie ends; B still runs
    assert isinstance(admission.arrive(session_running=False), Refuse)
    admission.ended()
    assert admission.arrive(session_running=False) == Admit()


def test_shutting_down_refuses_everyone_even_a_running_session() -> None:
    admission = Admission(limit=10)
    admission.close()
    assert admission.arrive(session_running=True) == Refuse(Refusal.SHUTTING_DOWN, 1.0)
    assert admission.refused == {Refusal.FULL: 0, Refusal.SHUTTING_DOWN: 1}


def test_transitions_the_caller_cannot_make() -> None:
    with pytest.raises(RuleError):
        Admission(limit=0)
    with pytest.raises(RuleError):
        Admission(limit=1).ended()


def test_the_thread_limit_covers_the_stream_limit() -> None:
    assert Settings(max_streams=100).reader_threads == 116
    assert Settings(max_streams=100, thread_limit=100).reader_threads == 100
    with pytest.raises(ValueError, match="would wait for a thread"):
        Settings(max_streams=100, thread_limit=99)


# -- the glue, under autojump_clock


@asynccontextmanager
async def open_manager(
    backend: FakeBackend, *, max_streams: int, budget: float = 2.0
) -> AsyncIterator[SessionManager]:
    manager = SessionManager(backend, join_budget=budget, max_streams=max_streams)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield manager
        await manager.shutdown()


async def test_full_gateway_refuses_new_sessions_and_admits_supersedes(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_manager(FakeBackend(), max_streams=1) as manager:
        a = manager.submit("owner", "s1", job("A"), "req-A")
        await manager.wait_turn(a)
        for session in ("s2", None):
            with pytest.raises(TooManyRequests) as refused:
                manager.submit("owner", session, job("C"), "req-C")
            assert refused.value.code == "gateway_full"
            assert refused.value.headers()["Retry-After"] == "1"
            assert refused.value.headers()["x-should-retry"] == "true"
        # Another owner's session of the same name is another session: refused too.
        with pytest.raises(TooManyRequests):
            manager.submit("other", "s1", job("C"), "req-C")
        t0 = trio.current_time()
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await manager.wait_turn(b)
        assert b.started_at == t0  # admitted, and started the moment A had died
        _, ending = await a.collect()
        assert ending.outcome is Outcome.SUPERSEDED
        stats = manager.statistics()
        assert (stats.running_streams, stats.max_streams) == (1, 1)
        assert stats.refused == {"full": 3, "shutting_down": 0}
    refusals = [r for r in caplog.records if r.getMessage() == "stream_refused"]
    assert len(refusals) == 3
    assert refusals[0].__dict__["jarvis_fields"] == {"reason": "full", "running": 1, "limit": 1}


async def test_a_supersede_past_the_join_budget_runs_beside_its_zombie(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(die_after={"A": 5.0})
    async with open_manager(backend, max_streams=1, budget=0.5) as manager:
        a = manager.submit("owner", "s1", job("A"), "req-A")
        await manager.wait_turn(a)
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await manager.wait_turn(b)  # the join runs out: B starts, A is a zombie
        assert manager.statistics().running_streams == 2
        with pytest.raises(TooManyRequests):
            manager.submit("owner", "s2", job("C"), "req-C")
        await a.producer_ended.wait()
        await trio.sleep(0.01)
        assert manager.statistics().running_streams == 1  # B, still running: still full
        assert not b.producer_ended.is_set()
        with pytest.raises(TooManyRequests):
            manager.submit("owner", "s2", job("C"), "req-C")


async def test_waiting_requests_are_counted(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend(die_after={"A": 1.0})
    async with open_manager(backend, max_streams=4) as manager:
        a = manager.submit("owner", "s1", job("A"), "req-A")
        await manager.wait_turn(a)
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await trio.sleep(0.1)
        assert manager.statistics().waiting_streams == 1
        await manager.wait_turn(b)
        assert manager.statistics().waiting_streams == 0


async def test_shutdown_refuses_with_503_and_retry_after(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_manager(FakeBackend(), max_streams=4) as manager:
        await manager.shutdown()
        with pytest.raises(ServiceUnavailable) as refused:
            manager.submit("owner", "s1", job("A"), "req-A")
    assert refused.value.code == "shutting_down"
    assert refused.value.headers()["Retry-After"] == "1"
    assert manager.statistics().refused["shutting_down"] == 1


# -- over HTTP


@deadline(30)
async def test_http_429_in_openai_shape_then_supersede_still_works(
    start_server: StartServer,
) -> None:
    server = await start_server(max_streams=1)
    headers = {"X-Session-Id": "s1"}
    async with server.client() as client, server.client() as other:
        async with client.stream("POST", CHAT, json=LONG, headers=headers) as a:
            events = sse_events(a)
            await anext(events)
            refused = await other.post(CHAT, json=SHORT, headers={"X-Session-Id": "s2"})
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "1"
            assert refused.headers["retry-after-ms"] == "1000"
            assert refused.headers["x-should-retry"] == "true"
            error = refused.json()["error"]
            assert error["type"] == "rate_limit_error" and error["code"] == "gateway_full"
            health = (await other.get("/healthz")).json()
            assert health["running_streams"] == 1 and health["max_streams"] == 1
            assert health["refused"] == {"full": 1, "shutting_down": 0}
            metrics = await scrape(other)
            assert metrics["jarvis_streams_refused_total{reason=full}"] == 1
            assert metrics["jarvis_streams_running"] == 1
            assert metrics["jarvis_streams_limit"] == 1
            assert metrics["jarvis_worker_threads_waiting"] == 0
            # A new prompt in the session that holds the only slot replaces its stream.
            b = await other.post(CHAT, json=SHORT, headers=headers)
            assert b.status_code == 200
            assert b.json()["choices"][0]["finish_reason"] == "length"
            assert [e async for e in events][-1] == "[DONE]"
        await eventually(lambda: server.manager.statistics().running_streams == 0)
        assert (await other.post(CHAT, json=SHORT)).status_code == 200


@deadline(30)
async def test_openai_client_at_default_settings_retries_until_a_slot_frees(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The SDK retries a 429 (twice, after Retry-After); it is served once a slot frees."""
    caplog.set_level(logging.INFO, logger="jarvis_trio")
    server = await start_server(max_streams=1, sim_tokens_per_second=20)
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", timeout=10)

    def ask() -> str:
        completion = client.chat.completions.create(
            model="jarvis-sim", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        return completion.choices[0].message.content or ""

    answer: list[str] = []
    async with server.client() as holder:
        async with holder.stream("POST", CHAT, json=LONG, headers={"X-Session-Id": "s1"}) as a:
            events = sse_events(a)
            await anext(events)

            async def ask_in_thread() -> None:
                answer.append(await trio.to_thread.run_sync(ask))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ask_in_thread)
                # The client saw the gateway full...
                await eventually(lambda: server.manager.statistics().refused["full"] >= 1)
                # ...then the holder leaves, and its slot frees.
                await a.aclose()
    assert len(answer) == 1 and len(answer[0].split()) == 3
    assert server.manager.statistics().refused["full"] >= 1
