"""A stream's two sides: what ``offer`` takes, and a cancel that wakes a waiting reader."""

from __future__ import annotations

import trio
import trio.testing

from jarvis_trio.generation import DirectSink, GenerationRequest, Output
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.rules import CancelReason
from jarvis_trio.streams import CHANNEL_BUFFER, Stream, StreamLimits
from tests.support.helpers import deadline


def new_stream() -> Stream:
    stream = Stream(
        job=GenerationRequest(model="m", messages=()),
        session_id="s",
        request_id="r",
        limits=StreamLimits(inactivity_seconds=30.0),
    )
    stream.start()
    return stream


@deadline(5)
async def test_an_offer_delivers_as_send_does() -> None:
    stream = new_stream()
    assert isinstance(stream, DirectSink)
    assert stream.offer("a")
    await stream.send("b")
    assert stream.tokens == 2
    assert stream.log.after(0).pieces == ("a", "b")
    assert 29.9 < stream.scope.deadline - trio.current_time() <= 30.0  # the timeout moved
    stream.end(Ending(Outcome.COMPLETED, "stop"))
    assert [p async for batch in stream.batches() for p in batch] == ["a", "b"]


@deadline(5)
async def test_an_offer_is_refused_when_full_cancelled_or_detached() -> None:
    full = new_stream()
    assert all(full.offer(str(i)) for i in range(CHANNEL_BUFFER))
    assert not full.offer("one too many")
    assert full.tokens == CHANNEL_BUFFER and not full.blocked_on_reader

    cancelled = new_stream()
    cancelled.mark_cancelled(CancelReason.SUPERSEDED)
    assert not cancelled.offer("late") and cancelled.tokens == 0

    timed_out = new_stream()
    timed_out.scope.cancel()  # as a deadline does: no cancel_reason
    assert not timed_out.offer("late")

    detached = new_stream()
    detached.detach()
    assert not detached.offer("x") and detached.tokens == 0


@deadline(5)
async def test_a_cancel_wakes_a_waiting_reader_and_nothing_follows() -> None:
    stream = new_stream()
    got: list[Output] = []

    async def read() -> None:
        async for batch in stream.batches():
            got.extend(batch)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await stream.send("a")
        await trio.testing.wait_all_tasks_blocked()  # the reader waits on an empty channel
        stream.mark_cancelled(CancelReason.STOPPED)
        with trio.fail_after(1):
            await stream.reader_ended.wait()
    assert got == ["a"]
    assert stream.final_ending().outcome is Outcome.STOPPED


@deadline(10)
async def test_concurrent_senders_log_in_the_order_the_reader_gets() -> None:
    """An agent's parallel tool calls send progress at once: a viewer (the log) must see
    the pieces in the live reader's order, since resuming at ``<id>:<n>`` counts them.
    The reader is slow: the buffer fills up, and sends wait for room in turn."""
    stream = new_stream()
    senders, each = 4, 3 * CHANNEL_BUFFER

    async def send_all(name: str) -> None:
        for i in range(each):
            await stream.send(f"{name}{i}")

    async def read() -> list[Output]:
        got: list[Output] = []
        async for batch in stream.batches():
            got.extend(batch)
            for _ in range(20):  # scheduler passes in which the senders fill the buffer
                await trio.lowlevel.checkpoint()
        return got

    got: list[Output] = []

    async def reader() -> None:
        got.extend(await read())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        async with trio.open_nursery() as sending:
            for s in range(senders):
                sending.start_soon(send_all, f"s{s}-")
        stream.end(Ending(Outcome.COMPLETED, "stop"))
    assert len(got) == senders * each
    assert stream.log.after(0, limit=None).pieces == tuple(got)


@deadline(5)
async def test_nothing_overtakes_a_send_that_waited_for_room() -> None:
    """The reader took a waiting send's piece (trio moved it into the buffer) and that send
    has not run again yet: an offer is refused, and a new send queues behind it, so the
    log still has the reader's order."""
    stream = new_stream()
    for i in range(CHANNEL_BUFFER):
        assert stream.offer(f"p{i}")
    got: list[Output] = []

    def drain() -> None:
        # The reader, in one step: no scheduler pass in which the waiting send resumes.
        while True:
            try:
                got.append(stream._receive.receive_nowait())
            except trio.WouldBlock:
                return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send, "waited")
        await trio.testing.wait_all_tasks_blocked()
        assert stream.blocked_on_reader
        drain()
        assert got[-1] == "waited" and stream.log.after(0, limit=None).pieces[-1] != "waited"
        assert not stream.offer("offered")
        await stream.send("sent")  # runs only once "waited" is logged
        drain()
    assert got[-2:] == ["waited", "sent"] and not stream.blocked_on_reader
    assert stream.log.after(0, limit=None).pieces == tuple(got)
