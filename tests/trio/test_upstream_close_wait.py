"""A cancelled request's thread ends after the upstream closed the connection too, or
after a bounded wait: so a session's next request reaches the upstream only once the
upstream is done with the old one.

The upstream here is a raw socket server that answers one line, then (writing nothing
more) waits for our end of the connection to close, as a real server's answer does when
its client leaves; what is checked is the order of events, not a timing. An upstream
that writes again after our shutdown gets a reset instead, which also ends the wait
(the transport's doc).
"""

from __future__ import annotations

import socket
import sys
from dataclasses import replace

import pytest
import trio

from jarvis_trio.backends import transport
from jarvis_trio.backends.ollama import OllamaBackend
from tests.support.fakes import Collect, job
from tests.support.helpers import deadline

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith("linux") and hasattr(socket, "TCP_INFO")),
    reason="the wait reads Linux's TCP state",
)

HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
)
LINE = b'{"model":"m","message":{"role":"assistant","content":"hi"},"done":false}\n'


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class SlowToClose:
    """Answers one line, then, on our EOF, takes ``pause`` seconds to end the request
    and close (``pause`` None: it never closes on its own)."""

    def __init__(self, pause: float | None) -> None:
        self.pause = pause
        self.port = 0
        self.saw_eof = trio.Event()
        self.closed = trio.Event()
        self._release = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with listeners[0]:
            task_status.started()
            stream = await listeners[0].accept()
            async with stream:
                head = b""
                while b"\r\n\r\n" not in head:  # the request; its small body is ignored
                    head += await stream.receive_some(65536)
                await stream.send_all(HEAD + chunk(LINE))
                for _ in range(1000):  # what is left of the request, then our EOF
                    if not await stream.receive_some(65536):
                        break
                self.saw_eof.set()
                if self.pause is None:
                    await self._release.wait()
                else:
                    await trio.sleep(self.pause)
                self.closed.set()

    def release(self) -> None:
        self._release.set()


async def cancel_after_first_token(upstream: SlowToClose) -> None:
    backend = OllamaBackend(f"http://127.0.0.1:{upstream.port}", limiter=trio.CapacityLimiter(2))
    try:
        sink = Collect()
        async with trio.open_nursery() as nursery:

            async def ask() -> None:
                await backend.generate(replace(job("hello"), model="m"), sink)

            nursery.start_soon(ask)
            await sink.first.wait()
            nursery.cancel_scope.cancel()
        # generate() has returned: its thread, and the thread's close of the
        # connection, are over.
    finally:
        await backend.aclose()


@deadline(20)
async def test_a_cancelled_requests_thread_ends_after_the_upstream_closed(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "PEER_CLOSE_WAIT", 10.0)  # never the bound here
    upstream = SlowToClose(pause=0.05)
    await nursery.start(upstream.serve)
    await cancel_after_first_token(upstream)
    assert upstream.saw_eof.is_set()
    assert upstream.closed.is_set()  # before our thread ended


@deadline(20)
async def test_the_wait_for_an_upstream_that_never_closes_is_bounded(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "PEER_CLOSE_WAIT", 0.05)
    upstream = SlowToClose(pause=None)
    await nursery.start(upstream.serve)
    await cancel_after_first_token(upstream)  # returns, after the wait's bound
    assert not upstream.closed.is_set()
    with trio.fail_after(5):
        await upstream.saw_eof.wait()
    upstream.release()
