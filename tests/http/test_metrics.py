"""GET /metrics: cancellation made visible."""

from __future__ import annotations

from functools import partial

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.backends.transport import KEEPALIVE_EXPIRY
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from tests.conftest import RunningServer, StartServer
from tests.support.fakes import FakeBackend
from tests.support.helpers import deadline, eventually, sse_events

CHAT = "/v1/chat/completions"


async def scrape(client: httpx.AsyncClient, **kw: object) -> dict[str, float]:
    r = await client.get("/metrics", **kw)  # type: ignore[arg-type]
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(r.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            out[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return out


@deadline(20)
async def test_metrics_follow_a_supersede(server: RunningServer) -> None:
    headers = {"X-Session-Id": "m"}
    long = {"prompt": "Long essay about AI", "stream": True}
    async with server.client() as client, server.client() as other:
        before = await scrape(client)
        assert before["jarvis_live_streams"] == 0
        assert before["jarvis_worker_threads_limit"] == 256 + 16
        assert before["jarvis_streams_limit"] == 256
        assert before["jarvis_streams_running"] == 0
        assert before["jarvis_streams_ended_total{outcome=superseded}"] == 0
        async with client.stream("POST", CHAT, json=long, headers=headers) as a:
            events = sse_events(a)
            await anext(events)
            await anext(events)
            during = await scrape(other)
            assert during["jarvis_live_streams"] == 1
            assert during["jarvis_worker_threads_in_use"] == 1
            assert during["jarvis_streams_running"] == 1
            b = await other.post(CHAT, json={"prompt": "hi", "max_tokens": 2}, headers=headers)
            assert b.status_code == 200
            [e async for e in events]
        await eventually(lambda: server.manager.statistics().sessions == 0)
        after = await scrape(client)
    assert after["jarvis_streams_started_total"] == 2
    assert after["jarvis_streams_ended_total{outcome=superseded}"] == 1
    assert after["jarvis_streams_ended_total{outcome=completed}"] == 1
    assert after["jarvis_joins_total{result=clean}"] == 1
    assert after["jarvis_join_duration_seconds_count"] == 1
    assert after["jarvis_cancel_to_upstream_closed_seconds_count"] == 1
    assert after["jarvis_time_to_first_token_seconds_count"] == 2
    assert after["jarvis_http_requests_total{status=200}"] >= 3
    assert after["jarvis_worker_threads_in_use"] == 0


@deadline(20)
async def test_join_timeouts_are_counted(start_server: StartServer) -> None:
    server = await start_server(FakeBackend(die_after={"A": 2.0}), join_budget=0.1)
    headers = {"X-Session-Id": "t"}
    async with server.client() as client, server.client() as other:
        async with client.stream(
            "POST", CHAT, json={"prompt": "A", "stream": True}, headers=headers
        ) as a:
            events = sse_events(a)
            await anext(events)
            stop = await other.post("/v1/sessions/t/cancel")
            assert stop.json()["result"] == "join_timeout"
            [e async for e in events]
        metrics = await scrape(other)
    assert metrics["jarvis_joins_total{result=timeout}"] == 1


@deadline(20)
async def test_metrics_need_a_key_when_keys_are_configured(start_server: StartServer) -> None:
    server = await start_server(api_keys="k")
    async with server.client() as client:
        assert (await client.get("/metrics")).status_code == 401
        await scrape(client, headers={"Authorization": "Bearer k"})


@deadline(20)
async def test_kept_alive_upstream_connections_are_counted_until_they_expire(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    sim: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=200.0))
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=4)
    server = await start_server(backend)
    async with server.client() as client:
        assert (await scrape(client))["jarvis_upstream_idle_connections"] == 0
        body = {"model": "llama3.2:1b+tokens=2", "messages": [{"role": "user", "content": "hi"}]}
        assert (await client.post(CHAT, json=body)).status_code == 200
        assert (await scrape(client))["jarvis_upstream_idle_connections"] == 1
        assert sim.open_connections == 1
        # The app's background run closes it once it expired (2.25-3.25 s after its request).
        with trio.fail_after(2 * KEEPALIVE_EXPIRY + 2):
            await sim.wait_until(lambda: sim.open_connections == 0)
        assert (await scrape(client))["jarvis_upstream_idle_connections"] == 0


async def test_the_embedded_model_keeps_no_upstream_connection(client: httpx.AsyncClient) -> None:
    assert (await scrape(client))["jarvis_upstream_idle_connections"] == 0
