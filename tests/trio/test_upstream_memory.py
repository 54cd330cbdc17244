"""An upstream request's response, and the encoded body it holds, are freed as soon as
the caller lets go: not left to the cyclic collector, which runs rarely
(``jarvis_trio/collector.py``), with large bodies (images, long histories) in them."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from functools import partial

import httpx
import pytest
import trio

from jarvis_trio.backends.upstream import UpstreamHttp
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from jarvis_trio.threads import CancelToken
from tests.support.helpers import deadline


@pytest.fixture
def no_cyclic_collection() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _ask(http: UpstreamHttp, body: dict[str, object]) -> weakref.ref[httpx.Response]:
    with http.request(CancelToken(), "POST", "/api/chat", json=body) as response:
        for _ in response.iter_lines():
            pass
        assert response.status_code == 200
        return weakref.ref(response)


@pytest.mark.usefixtures("no_cyclic_collection")
@deadline(20)
async def test_a_finished_response_is_freed_without_the_cyclic_collector(
    nursery: trio.Nursery,
) -> None:
    sim: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=1000.0))
    http = UpstreamHttp(sim.url)
    try:
        big = "x" * 200_000  # a long history: encoded into the request's body
        body = {
            "model": "llama3.2:1b+tokens=3",
            "messages": [{"role": "user", "content": big}],
            "stream": True,
        }
        gone = await trio.to_thread.run_sync(_ask, http, body)
        assert gone() is None
    finally:
        http.close()
