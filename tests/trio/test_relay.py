"""The thread-to-trio piece relay: order, backpressure, cancel, errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
import trio
import trio.testing

from jarvis_trio.errors import UpstreamError
from jarvis_trio.generation import GenerationRequest, Output
from jarvis_trio.relay import RELAY_LIMIT, PieceRelay, relay_from_worker
from jarvis_trio.rules import CancelReason
from jarvis_trio.streams import Stream, StreamLimits
from jarvis_trio.threads import CancelToken
from tests.support.helpers import deadline


class ListSink:
    """A sink that records what it gets; ``gate`` (when set) holds every send."""

    def __init__(self, gate: trio.Event | None = None) -> None:
        self.got: list[Output] = []
        self.gate = gate

    def opened(self, model: str | None = None) -> None:
        pass

    async def send(self, text: Output) -> None:
        if self.gate is not None:
            await self.gate.wait()
        await trio.lowlevel.checkpoint()
        self.got.append(text)


@deadline(10)
async def test_every_piece_arrives_once_in_order() -> None:
    sink = ListSink()

    def produce(token: CancelToken, relay: PieceRelay) -> int:
        for i in range(2000):
            relay.put(str(i))
        return 2000

    assert await relay_from_worker(produce, sink) == 2000
    assert sink.got == [str(i) for i in range(2000)]


@deadline(10)
async def test_a_held_sink_holds_the_thread_at_the_limit() -> None:
    gate = trio.Event()
    sink = ListSink(gate)
    put = 0

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        nonlocal put
        for i in range(100):
            relay.put(str(i))
            put += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_from_worker, produce, sink)
        # Until the thread is held: no put has returned for 0.1 s (bounded by the deadline).
        last = -1
        while put < RELAY_LIMIT or put != last:
            last = put
            await trio.sleep(0.1)
        # The pump took one batch and waits in send; the thread filled the relay again.
        assert RELAY_LIMIT < put <= 2 * RELAY_LIMIT
        gate.set()
    assert sink.got == [str(i) for i in range(100)]


@deadline(10)
async def test_cancel_frees_a_thread_waiting_for_room_and_sends_nothing_more() -> None:
    sink = ListSink(trio.Event())  # never opens: the relay fills up
    put = 0
    returned_after: list[float] = []

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        nonlocal put
        try:
            for i in range(1000):
                relay.put(str(i))
                put += 1
        finally:
            returned_after.append(time.monotonic())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(relay_from_worker, produce, sink)
        # Until the thread is stuck: the relay is full and no put has returned for 0.1 s.
        last = -1
        while put < RELAY_LIMIT or put != last:  # bounded by the test's deadline
            last = put
            await trio.sleep(0.1)
        assert not returned_after  # still waiting for room
        cancelled_at = time.monotonic()
        nursery.cancel_scope.cancel()
    assert returned_after and returned_after[0] - cancelled_at < 1.0
    assert put <= 2 * RELAY_LIMIT
    assert sink.got == []


@deadline(10)
async def test_pieces_put_before_an_error_arrive_before_it() -> None:
    sink = ListSink()

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        for i in range(50):
            relay.put(str(i))
        raise UpstreamError("mid-answer failure", code="upstream_error")

    with pytest.raises(UpstreamError):
        await relay_from_worker(produce, sink)
    assert sink.got == [str(i) for i in range(50)]


@deadline(10)
async def test_a_cancel_reaches_the_caller_as_a_plain_cancelled() -> None:
    sink = ListSink()
    started = threading.Event()
    seen: list[type[BaseException]] = []

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        relay.put("a")
        started.set()
        token.wait(30)  # raises WorkerCancelled when the token fires

    async def call() -> None:
        try:
            await relay_from_worker(produce, sink)
        except BaseException as exc:
            seen.append(type(exc))
            raise

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call)
        await trio.to_thread.run_sync(started.wait)
        nursery.cancel_scope.cancel()
    assert seen == [trio.Cancelled]


class FailingSink(ListSink):
    async def send(self, text: Output) -> None:
        raise UpstreamError("the sink failed", code="upstream_error")


@deadline(10)
async def test_an_error_of_the_sink_reaches_the_caller_plain() -> None:
    """Found in review: it came out wrapped in an ExceptionGroup, which ``except ApiError``
    in the session glue would miss."""

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        for i in range(1000):
            relay.put(str(i))
            token.raise_if_cancelled()

    with pytest.raises(UpstreamError, match="the sink failed"):
        await relay_from_worker(produce, FailingSink())


class OfferingSink(ListSink):
    """A :class:`~jarvis_trio.generation.DirectSink` that takes offers while it has
    ``room``, and counts how each piece came."""

    def __init__(self, room: int = 10**9) -> None:
        super().__init__()
        self.room = room
        self.offered = 0
        self.sent = 0

    def offer(self, text: Output) -> bool:
        if self.room <= 0:
            return False
        self.room -= 1
        self.offered += 1
        self.got.append(text)
        return True

    async def send(self, text: Output) -> None:
        self.sent += 1
        await super().send(text)

    def call_on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        return lambda: None  # never cancelled on its own


@deadline(10)
async def test_an_idle_pump_is_not_woken_for_what_the_sink_takes_at_once() -> None:
    sink = OfferingSink()

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        for i in range(20):
            time.sleep(0.01)  # the pump waits, idle, between pieces
            relay.put(str(i))

    await relay_from_worker(produce, sink)
    assert sink.got == [str(i) for i in range(20)]
    assert sink.offered == 20 and sink.sent == 0


@deadline(10)
async def test_what_the_sink_refuses_follows_through_the_pump_in_order() -> None:
    sink = OfferingSink(room=300)  # then every offer is refused

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        for i in range(2000):
            relay.put(str(i))
            if i % 50 == 0:
                time.sleep(0.001)  # let the pump go idle now and then

    await relay_from_worker(produce, sink)
    assert sink.got == [str(i) for i in range(2000)]
    assert sink.offered + sink.sent == 2000
    assert 0 < sink.offered <= 300 and sink.sent > 0


@deadline(10)
async def test_a_cancelled_stream_takes_no_offer_in_the_pass_before_the_pump_sees_it() -> None:
    """The thread's callback for a piece is queued, then the stream is cancelled before
    the callback runs: the stream refuses the offer, so nothing is delivered after the
    cancel, as when every piece went through ``send``. (Found in review: a version that
    cancelled before the put tested the relay's own refusal, not the stream's.)"""
    stream = live_stream()
    go = threading.Event()
    put_done = threading.Event()
    got: list[Output] = []

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        relay.put("first")
        go.wait(5)
        relay.put("after")  # its run_sync_soon callback is queued now
        put_done.set()
        token.wait(5)

    async def run() -> None:
        with stream.scope:
            await relay_from_worker(produce, stream)

    async def read() -> None:
        async for batch in stream.batches():
            got.extend(batch)

    first = stream.log.changed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        nursery.start_soon(read)
        with trio.fail_after(5):
            await first.wait()
        await trio.testing.wait_all_tasks_blocked()  # the pump waits, idle
        go.set()
        put_done.wait(5)  # holds the trio thread: the queued callback cannot run yet
        stream.mark_cancelled(CancelReason.SUPERSEDED)
    assert stream.log.after(0).pieces == ("first",) and stream.tokens == 1
    assert got == ["first"]


def live_stream() -> Stream:
    stream = Stream(
        job=GenerationRequest(model="m", messages=()),
        session_id="s",
        request_id="r",
        limits=StreamLimits(),
    )
    stream.start()
    return stream


@deadline(10)
async def test_a_stream_cancel_fires_the_thread_token_in_the_cancelling_call() -> None:
    """Not a scheduler pass later: the upstream socket is shut down by mark_cancelled."""
    stream = live_stream()
    tokens: list[CancelToken] = []
    waiting = threading.Event()

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        tokens.append(token)
        waiting.set()
        token.wait(5)

    async def run() -> None:
        with stream.scope:
            await relay_from_worker(produce, stream)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run)
        await trio.to_thread.run_sync(waiting.wait)
        stream.mark_cancelled(CancelReason.DISCONNECTED)
        assert tokens[0].cancelled  # no await between the cancel and this line


@deadline(10)
async def test_a_finished_thread_token_is_not_fired_by_a_later_cancel() -> None:
    """With kept-alive upstream connections, a stale token's callback would shut down a
    connection another request now uses."""
    stream = live_stream()
    tokens: list[CancelToken] = []

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        tokens.append(token)
        relay.put("done")

    with stream.scope:
        await relay_from_worker(produce, stream)
    stream.mark_cancelled(CancelReason.SUPERSEDED)
    assert not tokens[0].cancelled


@deadline(20)
@pytest.mark.parametrize("direct", [False, True], ids=["pump", "offer"])
async def test_many_relays_at_once_each_deliver_every_piece_in_order(direct: bool) -> None:
    """Twenty threads relay at once: no wake-up is lost (a lost one would hang its
    relay), and each sink gets its own pieces in order."""
    sinks = [OfferingSink(room=100) if direct else ListSink() for _ in range(20)]

    def produce(token: CancelToken, relay: PieceRelay) -> None:
        for i in range(300):
            relay.put(str(i))
            if i % 25 == 0:
                time.sleep(0.001)  # let the pump go idle now and then

    async with trio.open_nursery() as nursery:
        for sink in sinks:
            nursery.start_soon(relay_from_worker, produce, sink)
    for sink in sinks:
        assert sink.got == [str(i) for i in range(300)]
