"""The Redis registry with real processes: redis-server, `hypercorn -w 2`, the Ollama simulator.

Each test starts its own redis-server (Debian's, no persistence) on 127.0.0.1 and a
free port, the simulator, and the gateway with ``JARVIS_REGISTRY_URL`` set, and
stops them all (SIGTERM, then SIGKILL) however the test ends. The simulator's
per-session records (``/_sim/stats``, keyed by the ``X-Jarvis-Session`` label that
every process derives from the secret they share through Redis) say whether two
upstream streams of one session ever ran at once.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis as redis_py
import trio

from jarvis_trio.backends.transport import KEEPALIVE_EXPIRY
from jarvis_trio.errors import RegistryUnavailable
from jarvis_trio.registry.redis import RedisRegistry
from jarvis_trio.testing import (
    REDIS_SERVER,
    ServerProcess,
    free_port,
    hypercorn_argv,
    open_redis_server,
    open_server_process,
)
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    text_of,
)

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        not os.access(REDIS_SERVER, os.X_OK), reason="needs Debian's redis-server (make redis)"
    ),
]

BIN = Path(sys.executable).parent
CHAT = "/v1/chat/completions"
MODEL = "llama3.2:1b"
BUDGET = 2.0  # JARVIS_JOIN_BUDGET's default
SIM_READY = r"ollama_sim listening url=(http://\S+)"
HYPERCORN_READY = r"Running on (http://127\.0\.0\.1:\d+)"
SERVE_READY = r"server_listening url=(http://\S+)"


@dataclass
class Stack:
    redis_port: int
    redis: trio.Process
    sim: ServerProcess
    gateways: list[ServerProcess]

    def sim_stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.sim.url + "/_sim/stats", timeout=5).json()
        return stats

    def log(self) -> str:
        return "\n".join(line for g in self.gateways for line in g.output)


def gateway_env(redis_port: int, sim_url: str, **extra: str) -> dict[str, str]:
    return {
        "JARVIS_REGISTRY_URL": f"redis://127.0.0.1:{redis_port}/0",
        "JARVIS_BACKEND": "ollama",
        "JARVIS_OLLAMA_URL": sim_url,
        **extra,
    }


def ready_workers(server: ServerProcess) -> int:
    return sum(" server_ready " in line for line in server.output)


def subscribed_workers(server: ServerProcess) -> set[str]:
    return {
        m.group(1)
        for line in server.output
        if (m := re.search(r"registry_subscribed worker=(\d+)", line))
    }


@asynccontextmanager
async def open_hypercorn(env: dict[str, str], workers: int = 2) -> AsyncIterator[ServerProcess]:
    """`hypercorn -k trio -w N` on a free port; ready once every worker subscribed and
    serves (a worker accepts connections only once its app has started: until then the
    kernel hands every connection to the others)."""
    argv = [*hypercorn_argv(workers, free_port()), "jarvis_trio.asgi:app"]
    async with open_server_process(argv, HYPERCORN_READY, env=env) as server:
        await eventually(lambda: len(subscribed_workers(server)) == workers, within=20)
        await eventually(lambda: ready_workers(server) == workers, within=20)
        yield server


@asynccontextmanager
async def open_stack(tmp_path: Path, *, sim_pace: float = 100.0) -> AsyncIterator[Stack]:
    async with AsyncExitStack() as stack:
        port = free_port()
        redis = await stack.enter_async_context(open_redis_server(port, tmp_path))
        sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
        sim_argv += ["--tokens-per-second", str(sim_pace)]
        sim = await stack.enter_async_context(open_server_process(sim_argv, SIM_READY))
        yield Stack(port, redis, sim, [])


@dataclass
class Pair:
    worker_a: str
    worker_b: str
    stream_a: str
    stream_b: str
    a_finish: str | None
    b_finish: str | None
    b_wait: float  # from sending B until its response (after A's join and B's upstream)

    @property
    def cross(self) -> bool:
        return self.worker_a != self.worker_b


def finish_reason(events: list[Any]) -> str | None:
    """How the stream ended: a cut stream's ``jarvis.outcome``, else its finish_reason."""
    for event in reversed(events):
        if isinstance(event, dict) and event.get("choices"):
            reason = event["choices"][0].get("finish_reason")
            if reason is not None:
                return outcome_of(event)
    return None


@asynccontextmanager
async def pinned_clients(
    url: str, per_worker: int = 2
) -> AsyncIterator[dict[str, list[httpx.AsyncClient]]]:
    """``per_worker`` clients held on each of the two workers, by their worker id.

    The kernel hands a new connection to whichever worker accepts first, and a loaded
    machine can favour one worker for dozens of connections in a row (a busy worker
    wins the race). So the tests open idle connections (bounded) until each worker
    holds ``per_worker`` of them, and send every request on a kept-alive one: a
    request's worker is then the test's choice, and its ``X-Jarvis-Worker`` shows it.
    """
    async with AsyncExitStack() as stack:
        pinned: dict[str, list[httpx.AsyncClient]] = {}
        for _ in range(60):
            client = await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
            worker = (await client.get("/healthz")).headers["X-Jarvis-Worker"]
            pinned.setdefault(worker, []).append(client)
            if len(pinned) == 2 and all(len(c) >= per_worker for c in pinned.values()):
                break
        assert len(pinned) == 2, f"one worker accepted every connection: {pinned.keys()}"
        assert all(len(c) >= per_worker for c in pinned.values()), pinned
        yield pinned


async def run_pair(client_a: httpx.AsyncClient, client_b: httpx.AsyncClient, session: str) -> Pair:
    """A streams; after its first token B arrives in the same session, on another
    connection (held on the same worker as A's or on the other one)."""
    headers = {"X-Session-Id": session}
    a_body = {"model": MODEL + "+tokens=100000", "prompt": f"A {session}", "stream": True}
    b_body = {"model": MODEL + "+tokens=5", "prompt": f"B {session}", "stream": True}
    async with client_a.stream("POST", CHAT, json=a_body, headers=headers) as a:
        a_events = sse_events(a)
        first = [await anext(a_events), await anext(a_events)]  # the role, a first token
        sent = time.monotonic()
        async with client_b.stream("POST", CHAT, json=b_body, headers=headers) as b:
            b_wait = time.monotonic() - sent
            b_events = await read_all_events(b)
        a_rest = [e async for e in a_events]
    assert b.status_code == 200, b_events
    return Pair(
        worker_a=a.headers["X-Jarvis-Worker"],
        worker_b=b.headers["X-Jarvis-Worker"],
        stream_a=a.headers["X-Stream-Id"],
        stream_b=b.headers["X-Stream-Id"],
        a_finish=finish_reason(first + a_rest),
        b_finish=finish_reason(b_events),
        b_wait=b_wait,
    )


def log_worker_of(log: str, stream_id: str) -> str:
    match = re.search(rf"stream_start trace={stream_id} .*worker=(\d+)", log)
    assert match, f"no stream_start for {stream_id}"
    return match.group(1)


@pytest.mark.slow
@deadline(120)
async def test_pairs_across_two_workers_never_run_two_streams_of_a_session(
    tmp_path: Path,
) -> None:
    async with open_stack(tmp_path) as stack:
        env = gateway_env(stack.redis_port, stack.sim.url)
        async with open_hypercorn(env) as server:
            stack.gateways.append(server)
            pairs: list[Pair] = []
            async with pinned_clients(server.url) as pinned:
                one, other = sorted(pinned)
                # Every order: A and B on one worker, on the other, and across both ways.
                orders = [(one, other), (other, one), (one, one), (other, other)] * 2
                for i, (wa, wb) in enumerate(orders):
                    pair = await run_pair(pinned[wa][0], pinned[wb][1], f"pair-{i}")
                    pairs.append(pair)
                    assert (pair.worker_a, pair.worker_b) == (wa, wb), pair
            stats = stack.sim_stats()
            assert stats["live_requests"] == 0
            # What is still open is the kept-alive connections of the Bs, until they expire.
            await eventually(
                lambda: stack.sim_stats()["open_connections"] == 0, within=3 * KEEPALIVE_EXPIRY
            )
            log = stack.log()
    cross = [p for p in pairs if p.cross]
    for pair in pairs:
        # The logs tell the worker too, and agree with the headers.
        assert log_worker_of(log, pair.stream_a) == pair.worker_a
        assert log_worker_of(log, pair.stream_b) == pair.worker_b
        assert pair.a_finish == "superseded", pair
        assert pair.b_finish == "stop", pair
    # Every B started when its A had died, none when the join budget ran out.
    assert "prev_stream_timeout_on_cancel" not in log
    # A cross-worker cancel went through Redis: the canceller is the other worker.
    for pair in cross:
        assert re.search(
            rf"registry_superseded trace={pair.stream_a} by_worker={pair.worker_b} "
            rf"worker={pair.worker_a}",
            log,
        ), pair
    # One label per session across both workers, and never two live upstream streams.
    assert len(stats["session_peak"]) == len(pairs), stats
    assert max(stats["session_peak"].values()) == 1, stats
    print(
        "B waits (ms): same worker",
        sorted(round(p.b_wait * 1000, 1) for p in pairs if not p.cross),
        "cross",
        sorted(round(p.b_wait * 1000, 1) for p in cross),
    )


@pytest.mark.slow
@deadline(90)
async def test_stop_reaches_a_stream_on_the_other_worker(tmp_path: Path) -> None:
    async with open_stack(tmp_path) as stack:
        env = gateway_env(stack.redis_port, stack.sim.url)
        async with open_hypercorn(env) as server:
            stack.gateways.append(server)
            stops: list[tuple[bool, dict[str, Any], str | None]] = []
            async with pinned_clients(server.url) as pinned:
                one, other = sorted(pinned)
                for i, (wa, ws) in enumerate([(one, other), (other, one), (one, one)]):
                    headers = {"X-Session-Id": f"stop-{i}"}
                    body = {"model": MODEL + "+tokens=100000", "prompt": f"A {i}", "stream": True}
                    async with pinned[wa][0].stream("POST", CHAT, json=body, headers=headers) as a:
                        events = sse_events(a)
                        first = [await anext(events), await anext(events)]
                        stop = await pinned[ws][1].post(f"/v1/sessions/stop-{i}/cancel")
                        rest = [e async for e in events]
                    workers = (a.headers["X-Jarvis-Worker"], stop.headers["X-Jarvis-Worker"])
                    assert workers == (wa, ws)
                    stops.append((wa != ws, stop.json(), finish_reason(first + rest)))
            stats = stack.sim_stats()
            log = stack.log()
    for cross, report, finish in stops:
        assert finish == "stopped", stops
        assert report["result"] == "finished_cleanly", stops
        if cross:  # the other worker cannot name a stream it does not hold
            assert report["stream_id"] is None
    assert "registry_stopped" in log
    assert "prev_stream_timeout_on_cancel" not in log  # every join within its budget
    assert max(stats["session_peak"].values()) == 1, stats
    assert stats["open_connections"] == 0


@pytest.mark.slow
@deadline(90)
async def test_a_killed_worker_frees_its_sessions_within_the_lease(tmp_path: Path) -> None:
    """`hypercorn -w 2` and a second replica share Redis. A streams on a hypercorn
    worker, which is killed with SIGKILL mid-stream; B on the replica starts once A's
    lease expires, before the (longer) join budget would have forced it. hypercorn's
    master then stops its other worker and exits (docs/deployment.md: run it under a
    supervisor)."""
    lease, budget = 1.0, 6.0
    async with open_stack(tmp_path) as stack:
        env = gateway_env(
            stack.redis_port,
            stack.sim.url,
            JARVIS_REGISTRY_LEASE_SECONDS=str(lease),
            JARVIS_JOIN_BUDGET=str(budget),
        )
        replica_argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0"]
        async with (
            open_hypercorn(env) as workers,
            open_server_process(replica_argv, SERVE_READY, env=env) as replica,
        ):
            stack.gateways += [workers, replica]
            headers = {"X-Session-Id": "crash"}
            a_body = {"model": MODEL + "+tokens=100000", "prompt": "A", "stream": True}
            async with (
                httpx.AsyncClient(base_url=workers.url, timeout=10) as client,
                client.stream("POST", CHAT, json=a_body, headers=headers) as a,
            ):
                events = sse_events(a)
                await anext(events)
                await anext(events)
                victim = a.headers["X-Jarvis-Worker"]
                assert victim in subscribed_workers(workers)
                os.kill(int(victim), signal.SIGKILL)
                killed = time.monotonic()
                with pytest.raises(httpx.HTTPError):
                    async for _ in events:
                        pass
            b_body = {"model": MODEL + "+tokens=5", "prompt": "B", "stream": True}
            async with (
                httpx.AsyncClient(base_url=replica.url, timeout=10) as client,
                client.stream("POST", CHAT, json=b_body, headers=headers) as b,
            ):
                started_after = time.monotonic() - killed
                b_events = await read_all_events(b)
            with trio.fail_after(15):
                await workers.process.wait()  # the master gave up on its other worker too
            stats = stack.sim_stats()
            log = "\n".join(replica.output)
    assert b.status_code == 200
    assert finish_reason(b_events) == "stop" and text_of(b_events)
    # B waited for the dead worker's lease (renewed every lease/3 until the kill, so
    # it had 2/3 to all of the lease left), and got it when it expired: within the
    # lease time (plus one 0.1 s look and some slack for a loaded machine), long
    # before the budget.
    waited = re.search(r"lease_taken trace=\S+ worker=\d+ waited_ms=([\d.]+)", log)
    assert waited, log
    assert 100 < float(waited.group(1)) < 1000 * lease + 300, waited.group(0)
    assert started_after < lease + 1.0 < budget, started_after
    assert "prev_stream_timeout_on_cancel" not in log
    assert max(stats["session_peak"].values()) == 1, stats


async def post_session(client: httpx.AsyncClient, session: str | None) -> httpx.Response:
    headers = {"X-Session-Id": session} if session else {}
    body = {"model": MODEL + "+tokens=3", "prompt": "hi"}
    return await client.post(CHAT, json=body, headers=headers)


@pytest.mark.slow
@deadline(120)
async def test_redis_stopped_mid_run_gives_clear_errors_then_service_comes_back(
    tmp_path: Path,
) -> None:
    async with open_stack(tmp_path) as stack:
        # A short lease, so that a live stream's renewals fail twice within the outage.
        env = gateway_env(stack.redis_port, stack.sim.url, JARVIS_REGISTRY_LEASE_SECONDS="1.5")
        async with (
            open_hypercorn(env) as server,
            httpx.AsyncClient(base_url=server.url, timeout=10) as client,
        ):
            stack.gateways.append(server)
            assert (await post_session(client, "before")).status_code == 200
            # A stream that is live while Redis goes away: it cannot renew its lease, so
            # it stops (another process may have started the session again).
            live_body = {"model": MODEL + "+tokens=500", "prompt": "L", "stream": True}
            async with (
                httpx.AsyncClient(base_url=server.url, timeout=10) as live_client,
                live_client.stream(
                    "POST", CHAT, json=live_body, headers={"X-Session-Id": "live"}
                ) as live,
            ):
                live_events = sse_events(live)
                await anext(live_events)
                await anext(live_events)
                stack.redis.terminate()
                with trio.fail_after(10):
                    await stack.redis.wait()

                for i in range(5):
                    started = time.monotonic()
                    down = await post_session(client, f"down-{i}")
                    assert time.monotonic() - started < 2.0
                    assert down.status_code == 503, down.text
                    assert down.json()["error"]["code"] == "registry_unavailable"
                    assert down.json()["error"]["type"] == "service_unavailable"
                # Requests without a session never touch Redis.
                assert (await post_session(client, None)).status_code == 200
                with trio.fail_after(10):
                    rest = [e async for e in live_events]

                async with open_redis_server(stack.redis_port, tmp_path):
                    back: list[int] = []
                    # Bounded: 15 s at most, a request every 0.2 s.
                    with trio.fail_after(15):
                        for _ in range(75):
                            back.append((await post_session(client, "after")).status_code)
                            if back[-1] == 200:
                                break
                            await trio.sleep(0.2)
                    assert back[-1] == 200, back
                    stats = stack.sim_stats()
    assert set(back) <= {200, 503}
    # Found in review: it used to stream on for good, also when only this process had
    # lost Redis and another one had taken the session. It stops before its lease ends.
    assert finish_reason(rest) == "superseded", rest[-3:]
    assert re.search(r"registry_stale trace=\S+", stack.log()), "no self-fencing logged"
    assert max(stats["session_peak"].values()) == 1, stats


@deadline(30)
async def test_after_redis_lost_its_data_every_process_agrees_on_the_secret_again(
    tmp_path: Path,
) -> None:
    """Found in review: a process that had cached the shared secret kept it after a
    FLUSHALL while a new process seeded another one, so the two fenced one session
    under two digests (two live streams, for good)."""
    port = free_port()
    async with open_redis_server(port, tmp_path):
        url = f"redis://127.0.0.1:{port}/0"
        old = RedisRegistry(url, lease_seconds=5, timeout=0.5, worker="old")
        before = await old.claim("owner", "s")
        redis_py.Redis(port=port).flushall()
        new = RedisRegistry(url, lease_seconds=5, timeout=0.5, worker="new")
        from_new = await new.claim("owner", "s")  # seeds a secret of its own
        from_old = await old.claim("owner", "s")  # finds it, adopts it, claims again
        assert from_new.session == from_old.session != before.session
        assert from_old.generation > from_new.generation
        assert from_new.owner_label == from_old.owner_label
        # And a take that never had to wait leaves no waiter entry behind.
        assert await old.take(from_old, trio.current_time() + 1) is not None
        assert old._freed == {} and not old._freed_waiters
        await old.aclose()
        await new.aclose()


@deadline(30)
async def test_a_configured_secret_survives_redis_losing_its_data(tmp_path: Path) -> None:
    port = free_port()
    secret = "s" * 32
    async with open_redis_server(port, tmp_path):
        url = f"redis://127.0.0.1:{port}/0"
        one = RedisRegistry(url, lease_seconds=5, timeout=0.5, worker="one", secret=secret)
        before = await one.claim("owner", "s")
        redis_py.Redis(port=port).flushall()
        two = RedisRegistry(url, lease_seconds=5, timeout=0.5, worker="two", secret=secret)
        after = await two.claim("owner", "s")
        assert after.session == before.session == (await one.claim("owner", "s")).session
        # A gateway configured with another secret is refused, loudly, not fenced apart.
        other = RedisRegistry(url, lease_seconds=5, timeout=0.5, worker="x", secret="o" * 32)
        with pytest.raises(RegistryUnavailable, match="JARVIS_REGISTRY_SECRET"):
            await other.claim("owner", "s")
        for registry in (one, two, other):
            await registry.aclose()
