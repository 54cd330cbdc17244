"""Nothing upstream on the request path before the session acts: the cached model list."""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
import trio.testing

from jarvis_trio.backends.model_cache import Freshness, ModelCache, freshness
from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.backends.openai_compat import OpenAICompatBackend
from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import GenerationRequest, GenerationResult, ModelInfo, Output, Usage
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from jarvis_trio.relay import PieceRelay
from jarvis_trio.threads import CancelToken
from tests.conftest import StartServer
from tests.http.test_ollama_backend import MODEL, all_closed, chat, gateway, seq_of
from tests.support.helpers import deadline, outcome_of, read_all_events

CHAT = "/v1/chat/completions"
TAGS = "/api/tags"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=100.0))
    return started


# -- the pure part


def test_freshness() -> None:
    assert freshness(None, 5.0, 60.0, empty=False) is Freshness.MISSING
    assert freshness(0.0, 5.0, 60.0, empty=True) is Freshness.MISSING
    assert freshness(0.0, 59.9, 60.0, empty=False) is Freshness.FRESH
    assert freshness(0.0, 60.0, 60.0, empty=False) is Freshness.STALE


# -- the cache, under autojump_clock


class Upstream:
    def __init__(self) -> None:
        self.calls = 0
        self.fail = False
        self.models = [ModelInfo("m1", "t")]

    async def fetch(self) -> list[ModelInfo]:
        self.calls += 1
        await trio.sleep(0.5)  # a round trip
        if self.fail:
            raise OSError("down")
        return list(self.models)


async def test_fetches_once_then_serves_from_the_cache_until_the_ttl(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = Upstream()
    cache = ModelCache(upstream.fetch, ttl=60.0)
    assert cache.peek() is None  # nothing kept: the caller waits for get()
    assert [m.id for m in await cache.get()] == ["m1"]
    await trio.sleep(59.0)
    assert cache.peek() is not None and upstream.calls == 1
    await trio.sleep(1.0)
    assert cache.peek() is None  # stale, and nobody refreshes in the background
    upstream.models = [ModelInfo("m2", "t")]
    assert [m.id for m in await cache.get()] == ["m2"]
    assert upstream.calls == 2


async def test_a_stale_list_is_served_at_once_and_refreshed_in_the_background(
    autojump_clock: trio.testing.MockClock,
) -> None:
    upstream = Upstream()
    cache = ModelCache(upstream.fetch, ttl=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(cache.run)
        await cache.get()
        await trio.sleep(61.0)
        upstream.models = [ModelInfo("m2", "t")]
        before = trio.current_time()
        stale = cache.peek()
        stale_again = cache.peek()  # one refresh at a time
        assert trio.current_time() == before
        assert stale is not None and [m.id for m in stale] == ["m1"]
        assert stale_again is not None
        await trio.sleep(1.0)
        assert upstream.calls == 2
        fresh = cache.peek()
        assert fresh is not None and [m.id for m in fresh] == ["m2"]
        # A failed refresh keeps the stale list in use; the next peek tries again.
        await trio.sleep(61.0)
        upstream.fail = True
        assert cache.peek() is not None
        await trio.sleep(1.0)
        kept = cache.peek()
        assert kept is not None and [m.id for m in kept] == ["m2"]
        await trio.sleep(0.1)
        assert upstream.calls == 4
        cache.stop()


# -- against the Ollama simulator: the order of upstream requests


def no_model(**extra: Any) -> dict[str, Any]:
    return {k: v for k, v in chat("", **extra).items() if k != "model"}


@deadline(30)
async def test_a_supersede_reaches_the_upstream_before_the_model_list(
    start_server: StartServer, sim: OllamaSim
) -> None:
    """B names no model and nothing is cached: A's upstream is closed first, then the
    model list is asked for, then B's chat; the next such request asks no list at all."""
    server, limiter = await gateway(start_server, sim)
    headers = {"X-Session-Id": "s"}
    async with server.client() as ca, server.client() as cb, trio.open_nursery() as nursery:
        a_events: list[Any] = []

        async def run_a() -> None:
            body = chat(f"{MODEL}+stall_after=1")
            async with ca.stream("POST", CHAT, json=body, headers=headers) as a:
                a_events.extend(await read_all_events(a))

        nursery.start_soon(run_a)
        first = await sim.wait_request(lambda r: r.path == "/api/chat")
        await sim.wait_until(lambda: any(r.tokens_sent == 1 for r in sim.requests()))
        b = await cb.post(CHAT, json=no_model(stream=False), headers=headers)
        assert b.status_code == 200
        assert b.json()["model"] == MODEL  # the simulator's first listed model
    assert outcome_of(a_events[-2]) == "superseded"
    tags = [r for r in sim.requests() if r.path == TAGS]
    chats = [r for r in sim.requests() if r.path == "/api/chat"]
    assert len(tags) == 1 and len(chats) == 2
    second = chats[1]
    assert seq_of(sim, "close", first.conn) < seq_of(sim, "request", tags[0].conn)
    assert seq_of(sim, "request", tags[0].conn) < seq_of(sim, "request", second.conn)
    assert second.model == MODEL
    # Warm: no model list on the path any more.
    async with server.client() as client:
        again = await client.post(CHAT, json=no_model(stream=False), headers=headers)
        assert again.status_code == 200 and again.json()["model"] == MODEL
    assert len([r for r in sim.requests() if r.path == TAGS]) == 1
    await all_closed(sim, limiter)


@pytest.mark.parametrize("stream", [True, False])
@deadline(30)
async def test_no_model_listed_is_still_a_400(
    start_server: StartServer, sim: OllamaSim, stream: bool
) -> None:
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4))

    async def none_listed() -> list[ModelInfo]:
        return []

    backend.models = ModelCache(none_listed, ttl=60.0)
    server = await start_server(backend)
    async with server.client() as client:
        r = await client.post(CHAT, json=no_model(stream=stream))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "model_required"
    assert not [r for r in sim.requests() if r.path == "/api/chat"]


@deadline(30)
async def test_a_latest_name_asks_no_model_list_before_the_session_acts(
    start_server: StartServer, sim: OllamaSim
) -> None:
    """Ollama's ``name:latest`` is looked up in the kept list; with none kept, inside
    the stream: A's upstream is closed before the list is asked for, then B's chat."""
    server, limiter = await gateway(start_server, sim)
    headers = {"X-Session-Id": "s"}
    async with server.client() as ca, server.client() as cb, trio.open_nursery() as nursery:

        async def run_a() -> None:
            body = chat(f"{MODEL}+stall_after=1")
            async with ca.stream("POST", "/api/chat", json=body, headers=headers) as a:
                async for _ in a.aiter_lines():
                    pass

        nursery.start_soon(run_a)
        first = await sim.wait_request(lambda r: r.path == "/api/chat")
        await sim.wait_until(lambda: any(r.tokens_sent == 1 for r in sim.requests()))
        b = await cb.post("/api/chat", json=chat("tinyllama:latest", stream=False), headers=headers)
        assert b.status_code == 200 and b.json()["model"] == "tinyllama:latest"
    tags = [r for r in sim.requests() if r.path == TAGS]
    chats = [r for r in sim.requests() if r.path == "/api/chat"]
    assert len(tags) == 1 and len(chats) == 2
    assert seq_of(sim, "close", first.conn) < seq_of(sim, "request", tags[0].conn)
    assert seq_of(sim, "request", tags[0].conn) < seq_of(sim, "request", chats[1].conn)
    assert chats[1].model == "tinyllama:latest"
    # Kept now: the next such request asks no list.
    async with server.client() as client:
        again = await client.post("/api/chat", json=chat("tinyllama:latest", stream=False))
        assert again.status_code == 200
    assert len([r for r in sim.requests() if r.path == TAGS]) == 1
    await all_closed(sim, limiter)


async def test_latest_is_the_listed_untagged_name_when_a_list_is_kept(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An OpenAI-compatible server lists ``gpt-x``; an Ollama client asks for ``gpt-x:latest``."""
    backend = OllamaBackend("http://127.0.0.1:9", limiter=trio.CapacityLimiter(1))
    backend.models.store([ModelInfo("gpt-x", "t"), ModelInfo("tinyllama:latest", "t")])
    assert await backend.resolve_model("gpt-x:latest") == "gpt-x"
    assert await backend.resolve_model("tinyllama:latest") == "tinyllama:latest"
    assert await backend.resolve_model("other:latest") == "other:latest"  # the upstream's 404
    assert await backend.resolve_model("gpt-x") == "gpt-x"


class RecordingUpstream(OpenAICompatBackend):
    """An OpenAI-compatible upstream that lists ``foo`` (no tag), and records what model
    each chat asked for instead of sending it."""

    def __init__(self, *, listing_fails: bool = False) -> None:
        super().__init__("http://127.0.0.1:9", limiter=trio.CapacityLimiter(2))
        self.sent: list[str] = []
        self.listing_fails = listing_fails

    async def list_models(self) -> list[ModelInfo]:
        if self.listing_fails:
            raise UpstreamError("GET /models is not served here")
        models = [ModelInfo("foo", "t")]
        self.models.store(models)
        return models

    def _chat(
        self, request: GenerationRequest, token: CancelToken, relay: PieceRelay
    ) -> GenerationResult:
        self.sent.append(request.model)
        return GenerationResult("stop", Usage(0, 0))


class NullSink:
    def opened(self, model: str | None = None) -> None:
        pass

    async def send(self, piece: Output) -> None:
        pass


async def test_a_latest_name_resolved_before_any_list_is_looked_up_in_each_call() -> None:
    """Found in review: a name resolved with no list kept was sent as asked once a
    list was kept (another request's listing, or an agent's second model call)."""
    backend = RecordingUpstream()
    model = await backend.resolve_model("foo:latest")  # nothing kept yet: as asked
    assert model == "foo:latest"
    request = GenerationRequest(model=model, messages=())
    await backend.generate(request, NullSink())  # fetches the list, inside the stream
    await backend.generate(request, NullSink())  # an agent's next call: the list is kept
    assert backend.sent == ["foo", "foo"]


async def test_a_latest_name_goes_as_asked_when_the_list_cannot_be_had() -> None:
    backend = RecordingUpstream(listing_fails=True)
    await backend.generate(GenerationRequest(model="foo:latest", messages=()), NullSink())
    assert backend.sent == ["foo:latest"]
