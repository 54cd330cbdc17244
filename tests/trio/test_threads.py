"""Worker threads: the token fires on cancel, callbacks free blocked sockets, nothing leaks."""

from __future__ import annotations

import gc
import socket
import threading
import weakref
from functools import partial

import pytest
import trio

from jarvis_trio.generation import Output
from jarvis_trio.relay import relay_from_worker
from jarvis_trio.threads import CancelToken, WorkerCancelled, run_in_worker
from tests.support.helpers import deadline


@deadline(10)
async def test_returns_the_threads_value() -> None:
    assert await run_in_worker(lambda token: threading.current_thread().name) != "MainThread"


@deadline(10)
async def test_a_real_failure_in_the_thread_propagates() -> None:
    def boom(token: CancelToken) -> None:
        raise ValueError("upstream broke")

    with pytest.raises(ValueError, match="upstream broke"):
        await run_in_worker(boom)


@deadline(10)
async def test_cancel_fires_the_token_of_a_sleeping_thread() -> None:
    limiter = trio.CapacityLimiter(4)
    seen: list[str] = []

    def sleeper(token: CancelToken) -> None:
        try:
            token.wait(30)
        except WorkerCancelled:
            seen.append("woken")
            raise

    with trio.move_on_after(0.1) as scope:
        await run_in_worker(sleeper, limiter=limiter)
    assert scope.cancelled_caught
    assert seen == ["woken"]
    assert limiter.borrowed_tokens == 0  # the thread is gone, not abandoned


@deadline(10)
async def test_cancel_runs_callbacks_that_free_a_thread_blocked_on_a_silent_socket() -> None:
    """The upstream backends' trick: recv() polls nothing, shutdown() frees it."""
    ours, silent_peer = socket.socketpair()
    received: list[bytes] = []

    def blocked_reader(token: CancelToken) -> None:
        token.add_callback(lambda: ours.shutdown(socket.SHUT_RDWR))
        received.append(ours.recv(1024))  # the peer never sends

    with ours, silent_peer:
        with trio.move_on_after(0.1):
            await run_in_worker(blocked_reader)
        assert received == [b""]  # woken by our own shutdown, not by data
        assert silent_peer.recv(1024) == b""  # and the peer saw EOF


@deadline(10)
async def test_the_threads_own_error_after_cancel_is_not_reported_as_a_failure() -> None:
    def fails_when_woken(token: CancelToken) -> None:
        token.wait(30)

    def raises_other(token: CancelToken) -> None:
        try:
            token.wait(30)
        except WorkerCancelled:
            raise ConnectionResetError("incomplete chunked read") from None

    for fn in (fails_when_woken, raises_other):
        with trio.move_on_after(0.05) as scope:
            await run_in_worker(fn)
        assert scope.cancelled_caught  # Cancelled, not ConnectionResetError


@deadline(10)
async def test_a_thread_blocked_sending_into_a_full_channel_is_interrupted() -> None:
    send, receive = trio.open_memory_channel[int](0)
    sent: list[int] = []

    def producer(token: CancelToken) -> None:
        for i in range(100):
            token.raise_if_cancelled()
            trio.from_thread.run(send.send, i)
            sent.append(i)

    async with send, receive:
        with trio.move_on_after(0.1) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_in_worker, producer)
                assert await receive.receive() == 0
                # Nobody reads any more: the thread is stuck in send until cancelled.
    assert scope.cancelled_caught
    assert sent == [0]


def test_callbacks_run_once_and_late_ones_run_at_once() -> None:
    token = CancelToken()
    calls: list[str] = []
    token.add_callback(lambda: calls.append("early"))
    token.fire()
    token.fire()
    token.add_callback(lambda: calls.append("late"))
    assert calls == ["early", "late"]
    assert token.cancelled
    with pytest.raises(WorkerCancelled):
        token.wait(0)


@deadline(10)
async def test_the_caller_sees_a_plain_cancelled_not_a_group() -> None:
    """Found in review: backends catching ``trio.Cancelled`` missed a wrapped one."""
    caught: list[BaseException] = []
    with trio.move_on_after(0.05):
        try:
            await run_in_worker(lambda token: token.wait(30))
        except BaseException as exc:
            caught.append(exc)
            raise
    assert [type(e) for e in caught] == [trio.Cancelled]


def test_a_failing_callback_does_not_skip_the_others() -> None:
    token = CancelToken()
    calls: list[str] = []

    def broken() -> None:
        raise OSError("bad fd")

    token.add_callback(broken)
    token.add_callback(lambda: calls.append("shutdown"))
    token.fire()
    assert calls == ["shutdown"]


class _Held:
    """Something a token's callback names (a socket's line, a relay, a stream)."""


def _names(*_: object) -> None:
    """A callback that names what it would free (and its token, as a line's does)."""


class _Sink:
    def opened(self, model: str | None = None) -> None:
        pass

    async def send(self, piece: Output) -> None:
        pass


@pytest.mark.parametrize("runner", ["run_in_worker", "relay_from_worker"])
@deadline(10)
async def test_a_finished_threads_token_keeps_nothing_alive(runner: str) -> None:
    """A callback that names the token (a line's cancel checks its owner) makes a cycle:
    only the cyclic collector, which runs rarely, would free what the callbacks name."""
    held = _Held()
    gone = weakref.ref(held)

    def work(thing: _Held, token: CancelToken, *_: object) -> None:
        token.add_callback(partial(_names, thing, token))

    gc.collect()
    gc.disable()
    try:
        if runner == "run_in_worker":
            await run_in_worker(partial(work, held))
        else:
            await relay_from_worker(partial(work, held), _Sink())
        del held
        assert gone() is None
    finally:
        gc.enable()
