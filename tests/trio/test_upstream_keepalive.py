"""Kept-alive upstream connections: reused after a normal ending, never after a cancel,
bounded, and never a request sent twice.

What happened on the wire is read from the Ollama simulator's connection records (or
a small raw upstream's own count), not from timings.
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import pytest
import trio

from jarvis_trio.backends import transport
from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import GenerationResult
from jarvis_trio.ollama_sim import OllamaSim, serve_ollama_sim
from jarvis_trio.threads import CancelToken
from tests.support.fakes import Collect, job
from tests.support.helpers import deadline

MODEL = "llama3.2:1b"


@pytest.fixture
async def sim(nursery: trio.Nursery) -> OllamaSim:
    started: OllamaSim = await nursery.start(partial(serve_ollama_sim, tokens_per_second=200.0))
    return started


async def ask(backend: OllamaBackend, model: str, sink: Collect | None = None) -> GenerationResult:
    return await backend.generate(replace(job("hello"), model=model), sink or Collect())


def chats(sim: OllamaSim) -> list[int]:
    """The connection of each /api/chat request, in order."""
    return [r.conn for r in sim.requests() if r.path == "/api/chat"]


@deadline(20)
async def test_sequential_requests_reuse_one_connection(sim: OllamaSim) -> None:
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=4)
    try:
        first = await ask(backend, f"{MODEL}+tokens=3")
        second = await ask(backend, f"{MODEL}+tokens=3")
        assert first.finish_reason == second.finish_reason == "stop"
        one, two = chats(sim)
        assert one == two  # the stream's end was read: its connection went back to the pool
        assert [r.outcome for r in sim.requests()] == ["completed", "completed"]
        assert sim.open_connections == 1
        assert backend.idle_connections() == 1
    finally:
        await backend.aclose()
    with trio.fail_after(5):
        await sim.wait_until(lambda: sim.open_connections == 0)


@deadline(20)
async def test_keepalive_off_opens_a_connection_per_request(sim: OllamaSim) -> None:
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=0)
    try:
        await ask(backend, f"{MODEL}+tokens=2")
        await ask(backend, f"{MODEL}+tokens=2")
        one, two = chats(sim)
        assert one != two
        with trio.fail_after(5):
            await sim.wait_until(lambda: sim.open_connections == 0)
    finally:
        await backend.aclose()


@pytest.mark.parametrize("fault", ["stall_after=1", "stall_headers"])
@deadline(30)
async def test_a_cancel_on_a_reused_connection_shuts_it_and_it_is_not_reused(
    sim: OllamaSim, fault: str
) -> None:
    """The second request's token, not the first's, owns the kept-alive socket: its
    cancel frees its thread blocked in recv() on a silent upstream (before or after
    the headers), and the connection is closed, not handed to the third request."""
    limiter = trio.CapacityLimiter(4)
    backend = OllamaBackend(sim.url, limiter=limiter, keepalive=4)
    try:
        await ask(backend, f"{MODEL}+tokens=2")
        (kept,) = chats(sim)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                sink = Collect()
                nursery.start_soon(ask, backend, f"{MODEL}+{fault}", sink)
                stalled = await sim.wait_request(lambda r: r.model == f"{MODEL}+{fault}")
                assert stalled.conn == kept  # on the reused connection
                if fault == "stall_after=1":
                    await sink.first.wait()
                scope.cancel()
        # generate() returned: its thread is done (run_in_worker waits for it)
        assert limiter.borrowed_tokens == 0
        with trio.fail_after(5):
            closed = await sim.wait_closed(kept)
        assert closed.closed_by == "client"
        assert backend.idle_connections() == 0
        await ask(backend, f"{MODEL}+tokens=2")
        assert chats(sim)[-1] != kept
    finally:
        await backend.aclose()


@deadline(30)
async def test_the_pool_keeps_no_more_idle_connections_than_the_bound(sim: OllamaSim) -> None:
    bound = 2
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(8), keepalive=bound)
    try:
        for _ in range(2):  # the second round reuses what the first kept
            async with trio.open_nursery() as nursery:
                for _ in range(5):
                    nursery.start_soon(ask, backend, f"{MODEL}+tokens=20")
            assert backend.idle_connections() == bound
            with trio.fail_after(5):
                await sim.wait_until(lambda: sim.open_connections == bound)
        assert len(set(chats(sim))) == 5 + 5 - bound
    finally:
        await backend.aclose()


@deadline(20)
async def test_expired_idle_connections_are_closed_without_waiting_for_a_request(
    sim: OllamaSim, nursery: trio.Nursery
) -> None:
    """httpcore closes an expired idle connection only when the pool is next used; the
    backend's background run closes it on time, on both sides."""
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=4)
    await nursery.start(backend.run)
    try:
        await ask(backend, f"{MODEL}+tokens=2")
        (kept,) = chats(sim)
        assert sim.open_connections == 1
        with trio.fail_after(2 * transport.KEEPALIVE_EXPIRY + 2):
            closed = await sim.wait_closed(kept)
        assert closed.closed_by == "client"
        assert sim.open_connections == 0
        assert backend.idle_connections() == 0
        assert (await ask(backend, f"{MODEL}+tokens=2")).finish_reason == "stop"
        assert chats(sim)[-1] != kept
    finally:
        backend.stop()
        await backend.aclose()


@deadline(20)
async def test_a_request_handed_a_connection_as_it_expires_is_sent_once_on_a_new_one(
    sim: OllamaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool looked at the idle connection (still open) just before it was closed as
    expired: the request finds it closed at its first write, before a byte is sent,
    and goes out on a new connection."""
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=4)
    try:
        await ask(backend, f"{MODEL}+tokens=2")
        (kept,) = chats(sim)
        monkeypatch.setattr(transport._Line, "readable", lambda self: False)
        found_closed: list[transport._Line] = []
        claim = transport._Line.claim

        def counted_claim(line: transport._Line, token: CancelToken | None) -> None:
            try:
                claim(line, token)
            except transport.ConnectionClosedIdle:
                found_closed.append(line)
                raise

        monkeypatch.setattr(transport._Line, "claim", counted_claim)
        assert backend._http.transport.close_expired(0) == 1
        assert backend.idle_connections() == 0
        assert (await ask(backend, f"{MODEL}+tokens=2")).finish_reason == "stop"
        assert len(found_closed) == 1  # handed the closed one first, then a new one
        first, second = chats(sim)  # each request reached the upstream once
        assert first == kept != second
        assert [r.outcome for r in sim.requests()] == ["completed", "completed"]
        with trio.fail_after(5):
            assert (await sim.wait_closed(kept)).closed_by == "client"
    finally:
        await backend.aclose()


@deadline(20)
async def test_a_request_that_finds_every_connection_closed_fails_having_sent_nothing(
    sim: OllamaSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each try (one per idle connection the pool may hold, then a last one) meets a
    connection closed as expired: the request fails as the upstream's disconnect, says
    that nothing was sent, and never reached the upstream."""
    tries: list[transport._Line] = []

    def closed_claim(line: transport._Line, token: CancelToken | None) -> None:
        tries.append(line)
        line.sock.close()
        raise transport.ConnectionClosedIdle("closed as it was handed out")

    monkeypatch.setattr(transport._Line, "claim", closed_claim)
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=2)
    try:
        with pytest.raises(UpstreamError) as failed:
            await ask(backend, f"{MODEL}+tokens=2")
        assert failed.value.code == "upstream_disconnected"
        assert "Nothing was sent" in failed.value.message
        assert len(tries) == 2 + 1
        assert chats(sim) == []
    finally:
        await backend.aclose()


@deadline(20)
async def test_closing_expired_connections_leaves_a_request_in_progress_alone(
    sim: OllamaSim,
) -> None:
    backend = OllamaBackend(sim.url, limiter=trio.CapacityLimiter(4), keepalive=4)
    try:
        await ask(backend, f"{MODEL}+tokens=2")  # the long answer reuses its connection
        async with trio.open_nursery() as nursery:
            sink = Collect()
            results: list[GenerationResult] = []

            async def long_answer() -> None:
                results.append(await ask(backend, f"{MODEL}+tokens=40", sink))

            nursery.start_soon(long_answer)
            await sink.first.wait()
            assert backend.idle_connections() == 0  # in use, not idle
            assert backend._http.transport.close_expired(0) == 0
        assert [r.finish_reason for r in results] == ["stop"]
        assert len(sink.texts) == 40
        first, second = chats(sim)
        assert first == second
        assert backend.idle_connections() == 1
    finally:
        await backend.aclose()


class RawUpstream:
    """An Ollama-like upstream on raw trio sockets, answering each request once.

    ``close_idle``: after its first answer, it closes that connection (a peer that
    drops idle connections). ``drop_second``: it reads the second request on a
    connection and closes without answering (the peer's close racing our request).
    """

    ANSWER = (
        b'{"model":"m","message":{"role":"assistant","content":"hi"},'
        b'"done":true,"done_reason":"stop","eval_count":1}\n'
    )

    def __init__(self, *, close_idle: bool = False, drop_second: bool = False) -> None:
        self.close_idle = close_idle
        self.drop_second = drop_second
        self.received: list[tuple[int, bytes]] = []  # (connection, body) per POST
        self.connections = 0
        self.closed = trio.Event()
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        try:
            await self._answer(stream)
        finally:
            self.closed.set()  # the socket is closed: its FIN is on its way

    async def _answer(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        conn = self.connections
        buffer = b""
        async with stream:
            for index in range(100):
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some()
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(buffer) < length:
                    buffer += await stream.receive_some()
                body, buffer = buffer[:length], buffer[length:]
                self.received.append((conn, body))
                if index == 1 and self.drop_second:
                    return
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(self.ANSWER), self.ANSWER)
                )
                if self.close_idle:
                    return


@pytest.mark.parametrize("case", ["closed while idle", "closed on our request"])
@deadline(20)
async def test_a_post_on_a_connection_the_upstream_closed_is_never_sent_twice(
    nursery: trio.Nursery, case: str
) -> None:
    upstream = RawUpstream(
        close_idle=case == "closed while idle", drop_second=case == "closed on our request"
    )
    await nursery.start(upstream.serve)
    backend = OllamaBackend(
        f"http://127.0.0.1:{upstream.port}", limiter=trio.CapacityLimiter(4), keepalive=4
    )
    try:
        assert (await ask(backend, "m")).finish_reason == "stop"
        if case == "closed while idle":
            await upstream.closed.wait()
            # The FIN is seen before reuse (is_readable): a new connection, sent once.
            assert (await ask(backend, "m")).finish_reason == "stop"
            assert [conn for conn, _ in upstream.received] == [1, 2]
        else:
            # The request reached the upstream, which closed without answering: the
            # request fails with the ordinary upstream error, and is not resent.
            with pytest.raises(UpstreamError) as failed:
                await ask(backend, "m")
            assert failed.value.code == "upstream_disconnected"
            assert [conn for conn, _ in upstream.received] == [1, 1]
            assert upstream.connections == 1
        assert upstream.received[0][1] == upstream.received[1][1]  # the same request body
    finally:
        await backend.aclose()
