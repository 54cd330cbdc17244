"""The upstream transport's socket calls: no system call that changes nothing."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest

from jarvis_trio.backends.transport import (
    KEEPALIVE_EXPIRY,
    ConnectionClosedIdle,
    SocketStream,
    TokenNetworkBackend,
    TokenTransport,
    _Line,
    _set_timeout,
)
from jarvis_trio.threads import CancelToken


class CountingSocket(socket.socket):
    """A real socket that counts what would be system calls."""

    def __init__(self) -> None:
        super().__init__(socket.AF_INET, socket.SOCK_STREAM)
        self.timeouts_set: list[float | None] = []
        self.sent: list[bytes] = []

    def settimeout(self, value: float | None) -> None:
        self.timeouts_set.append(value)
        super().settimeout(value)

    def sendall(self, data: object, flags: int = 0) -> None:
        assert isinstance(data, bytes)
        self.sent.append(data)


def test_a_timeout_is_set_only_when_it_changes() -> None:
    with CountingSocket() as sock:
        for timeout in (None, None, None, 5.0, 5.0, None):
            _set_timeout(sock, timeout)
            assert sock.gettimeout() == timeout
        # A fresh socket blocks (None) already; then one change each way.
        assert sock.timeouts_set == [5.0, None]


def test_an_empty_write_sends_nothing_and_leaves_the_timeout() -> None:
    with CountingSocket() as sock:
        stream = SocketStream(_Line(sock), TokenNetworkBackend())
        stream.write(b"", timeout=5.0)
        assert sock.sent == [] and sock.timeouts_set == []
        stream.write(b"head", timeout=5.0)
        stream.write(b"body", timeout=5.0)
        assert sock.sent == [b"head", b"body"] and sock.timeouts_set == [5.0]


class FiredToken(CancelToken):
    """Fired, its callbacks not run yet: ``fire`` sets the flag first, and the thread,
    polling between lines, can release its response in between."""

    @property
    def cancelled(self) -> bool:
        return True


@pytest.mark.parametrize("fired", [True, False])
def test_a_release_shuts_the_line_down_only_for_a_fired_request(fired: bool) -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        line = _Line(ours)
        token = FiredToken() if fired else CancelToken()
        line.claim(token)
        line.release(token)
        assert line.owner is None
        # Fired: not reused, and its close waits as after any cancel; the peer sees EOF.
        assert line.dead is fired
        if fired:
            assert theirs.recv(1) == b""


def test_only_a_line_idle_since_the_cutoff_is_closed_as_expired() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        line = _Line(ours)
        token = CancelToken()
        line.claim(token)
        assert not line.close_if_idle_since(time.monotonic())  # in use
        line.release(token)
        assert not line.close_if_idle_since(time.monotonic() - 60)  # idle, not that long
        assert line.idle
        assert line.close_if_idle_since(time.monotonic())
        assert not line.idle
        assert line.dead and ours.fileno() == -1 and theirs.recv(1) == b""
        assert line.readable()  # so httpcore discards it
        with pytest.raises(ConnectionClosedIdle):  # a request handed it sends nothing
            line.claim(CancelToken())
        assert not line.close_if_idle_since(time.monotonic())  # closed once


def test_a_line_shut_down_by_a_cancel_and_left_idle_is_closed_once_expired() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        line = _Line(ours)
        token = CancelToken()
        line.claim(token)
        token.fire()
        line.release(token)
        assert line.dead and not line.idle  # not counted as a kept connection
        # Until it expires, its close is the request's own (after the wait for the
        # upstream's end); left in the pool, it is closed then, not at the pool's next use.
        assert not line.close_if_idle_since(time.monotonic() - 60)
        assert ours.fileno() != -1
        assert line.close_if_idle_since(time.monotonic())
        assert ours.fileno() == -1
        assert not line.close_if_idle_since(time.monotonic())  # closed once


@pytest.mark.parametrize(
    ("idle_for", "closed"), [(KEEPALIVE_EXPIRY + 0.1, 0), (KEEPALIVE_EXPIRY + 0.4, 1)]
)
def test_the_transport_closes_an_idle_line_only_after_httpcores_own_expiry(
    idle_for: float, closed: int
) -> None:
    """httpcore's expiry starts just after the line's idle time does (at the response's
    close); past it, the pool hands the connection out no more: closing after a grace
    leaves no request to meet a connection we closed."""
    pool = TokenTransport(keepalive=1)
    backend = pool._backend
    ours, theirs = socket.socketpair()
    with ours, theirs, contextlib.closing(pool):
        line = _Line(ours)
        token = CancelToken()
        line.claim(token)
        line.release(token)
        line.idle_since = time.monotonic() - idle_for
        backend._lines.add(line)
        assert pool.idle_connections() == 1
        assert pool.close_expired() == closed
        assert pool.idle_connections() == 1 - closed
