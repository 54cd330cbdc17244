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
