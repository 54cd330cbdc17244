"""The trio glue under autojump_clock, with an in-trio fake backend: exact virtual times."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from jarvis_trio.errors import ServiceUnavailable
from jarvis_trio.outcomes import Outcome
from jarvis_trio.rules import CancelReason
from jarvis_trio.sessions import SessionManager
from jarvis_trio.streams import CHANNEL_BUFFER, Stream
from tests.support.fakes import FakeBackend, RecordingObserver, job


@asynccontextmanager
async def open_manager(
    backend: FakeBackend,
    *,
    budget: float = 2.0,
    inactivity: float = 120.0,
    first_token: float = 300.0,
    retained: int = 256,
    observer: RecordingObserver | None = None,
) -> AsyncIterator[SessionManager]:
    manager = SessionManager(
        backend,
        join_budget=budget,
        inactivity_seconds=inactivity,
        first_token_seconds=first_token,
        replay_retained=retained,
        observer=observer,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        yield manager
        await manager.shutdown()


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "jarvis_trio"]


async def start(manager: SessionManager, prompt: str, session: str | None = "s1") -> Stream:
    stream = manager.submit("owner", session, job(prompt), request_id=f"req-{prompt}")
    await manager.wait_turn(stream)
    return stream


async def test_single_stream_completes_and_session_is_dropped(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(tokens=3)
    async with open_manager(backend) as manager:
        stream = await start(manager, "A")
        text, ending = await stream.collect()
        assert text == "A-0 A-1 A-2 "
        assert ending.outcome is Outcome.COMPLETED and ending.finish_reason == "stop"
        await stream.producer_ended.wait()
        stats = manager.statistics()
        assert stats.sessions == 0 and stats.live_streams == 0


async def test_b_starts_the_moment_a_has_died(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend(die_after={"A": 0.3})
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(1.0)
        t0 = trio.current_time()
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await manager.wait_turn(b)
        assert trio.current_time() == t0 + 0.3
        _, a_ending = await a.collect()
        assert a_ending.outcome is Outcome.SUPERSEDED
        await trio.sleep(0.5)
        assert backend.starts["B"] == t0 + 0.3
    log = events(caplog)
    cancelled = log.index("stream_cancelled")
    clean = log.index("prev_stream_finished_cleanly")
    b_start = [i for i, e in enumerate(log) if e == "stream_start"][1]
    assert cancelled < clean < b_start
    assert "prev_stream_timeout_on_cancel" not in log


async def test_b_starts_after_the_budget_when_a_refuses_to_die(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    backend = FakeBackend(die_after={"A": 30.0})
    observer = RecordingObserver()
    async with open_manager(backend, observer=observer) as manager:
        a = await start(manager, "A")
        await trio.sleep(1.0)
        t0 = trio.current_time()
        b = await start(manager, "B")
        assert trio.current_time() == t0 + 2.0
        # A's reader is not held hostage by its stuck backend: it ends now.
        _, a_ending = await a.collect()
        assert a_ending.outcome is Outcome.SUPERSEDED
        assert trio.current_time() == t0 + 2.0
        assert observer.joins_timed_out == 1
        await trio.sleep(1.0)
        b.close_reader()
    assert "prev_stream_timeout_on_cancel" in events(caplog)
    assert backend.ends["A"] == t0 + 30.0  # the zombie was still joined at shutdown


async def test_newer_prompt_supersedes_the_waiting_one_which_never_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(die_after={"A": 1.0})
    async with open_manager(backend) as manager:
        await start(manager, "A")
        await trio.sleep(0.5)
        t0 = trio.current_time()
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await trio.sleep(0.4)
        c = manager.submit("owner", "s1", job("C"), "req-C")
        await manager.wait_turn(b)
        assert trio.current_time() == t0 + 0.4  # B's fate is known the moment C arrives
        _, b_ending = await b.collect()
        assert b_ending.outcome is Outcome.SUPERSEDED
        await manager.wait_turn(c)
        assert trio.current_time() == t0 + 1.0
        assert "B" not in backend.starts
        c.close_reader()


async def test_join_deadline_is_anchored_to_the_cancel_in_a_storm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(die_after={"A": 60.0})
    async with open_manager(backend) as manager:
        await start(manager, "A")
        t0 = trio.current_time()
        waiting = []
        for prompt in "BCDEFGH":
            waiting.append(manager.submit("owner", "s1", job(prompt), f"req-{prompt}"))
            await trio.sleep(0.25)
        newest = waiting[-1]
        await manager.wait_turn(newest)
        assert trio.current_time() == t0 + 2.0
        assert [s.ending.outcome for s in waiting[:-1] if s.ending] == [Outcome.SUPERSEDED] * 6
        await newest.wait_ready()
        assert list(backend.starts) == ["A", "H"]
        newest.close_reader()


async def test_stop_joins_the_stream_and_reports_how_it_ended(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(die_after={"A": 0.3, "B": 10.0})
    async with open_manager(backend) as manager:
        assert (await manager.stop("owner", "s1")).result == "nothing_live"
        a = await start(manager, "A")
        report = await manager.stop("owner", "s1")
        assert report.result == "finished_cleanly" and report.stream_id == a.id
        assert report.waited_ms == pytest.approx(300.0)
        assert (await a.collect())[1].outcome is Outcome.STOPPED
        b = await start(manager, "B")
        report = await manager.stop("owner", "s1")
        assert report.result == "join_timeout" and report.stream_id == b.id
        assert report.waited_ms == pytest.approx(2000.0)
        assert (await manager.stop("owner", "s1")).result == "nothing_live"


async def test_stop_is_scoped_to_its_owner(autojump_clock: trio.testing.MockClock) -> None:
    backend = FakeBackend()
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        assert (await manager.stop("someone-else", "s1")).result == "nothing_live"
        assert a.cancel_reason is None
        a.close_reader()


async def test_disconnect_cancels_a_live_stream_and_drops_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(0.35)
        manager.abandon(a)
        await a.producer_ended.wait()
        assert a.ending is not None and a.ending.outcome is Outcome.DISCONNECTED
        assert manager.statistics().sessions == 0
        assert backend.ends["A"] == backend.starts["A"] + 0.35


async def test_disconnect_of_a_waiting_request_rejects_it_without_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(die_after={"A": 1.0})
    async with open_manager(backend) as manager:
        await start(manager, "A")
        b = manager.submit("owner", "s1", job("B"), "req-B")
        await trio.sleep(0.1)
        manager.abandon(b)
        assert b.ending is not None and b.ending.outcome is Outcome.DISCONNECTED
        await trio.sleep(2.0)
        assert "B" not in backend.starts
        assert manager.statistics().sessions == 0


async def test_inactivity_ends_a_silent_stream_with_an_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(silent_after={"A": 2})
    async with open_manager(backend, inactivity=5.0) as manager:
        a = await start(manager, "A")
        text, ending = await a.collect()
        assert text == "A-0 A-1 "
        assert ending.outcome is Outcome.INACTIVITY
        assert ending.error is not None and ending.error.status == 504
        # Last output at +0.2; the deadline moved with it.
        assert backend.ends["A"] == backend.starts["A"] + 0.2 + 5.0


async def test_requests_without_session_are_independent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(tokens=5)
    async with open_manager(backend) as manager:
        a = await start(manager, "A", session=None)
        b = await start(manager, "B", session=None)
        assert manager.statistics().live_streams == 2
        assert (await a.collect())[1].outcome is Outcome.COMPLETED
        assert (await b.collect())[1].outcome is Outcome.COMPLETED


async def test_shutdown_cancels_every_stream_with_reason_shutdown(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend()
    manager = SessionManager(backend)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        streams = [await start(manager, p, session=p) for p in "ABC"]
        await manager.shutdown()
        for stream in streams:
            assert (await stream.collect())[1].outcome is Outcome.SHUTDOWN
        with pytest.raises(ServiceUnavailable):
            manager.submit("owner", "s1", job("D"), "req-D")


async def test_reader_never_sees_output_produced_after_cancel(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(interval=0.01, tokens=50)
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(0.255)  # 25 chunks are buffered, none read yet
        b = manager.submit("owner", "s1", job("B"), "req-B")
        text, ending = await a.collect()
        assert text == "" and ending.outcome is Outcome.SUPERSEDED
        await manager.wait_turn(b)
        b.close_reader()


async def test_storm_never_lets_two_streams_of_a_session_emit_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(1234)
    backend = FakeBackend(interval=0.05, tokens=40)
    backend.die_after.update({f"p{i}": rng.choice([0.0, 0.1, 0.7, 3.0]) for i in range(300)})
    emitted: dict[str, list[tuple[float, str]]] = {}

    async def client(manager: SessionManager, i: int, session: str) -> None:
        stream = manager.submit("owner", session, job(f"p{i}"), f"req-{i}")
        try:
            await manager.wait_turn(stream)
            await stream.wait_ready()
            with trio.move_on_after(rng.choice([0.2, 1.0, 10.0])):
                async for _ in stream.batches():
                    emitted.setdefault(session, []).append((trio.current_time(), stream.id))
        finally:
            manager.abandon(stream)

    async with open_manager(backend) as manager, trio.open_nursery() as nursery:
        for i in range(300):
            nursery.start_soon(client, manager, i, f"s{rng.randrange(8)}")
            await trio.sleep(rng.choice([0.0, 0.01, 0.1, 0.3]))

    for session, log in emitted.items():
        seen: list[str] = []
        for _, stream_id in log:
            if not seen or seen[-1] != stream_id:
                assert stream_id not in seen, f"{session}: {stream_id} emitted again after another"
                seen.append(stream_id)
    assert manager.statistics().sessions == 0


@pytest.mark.slow
async def test_millions_of_one_off_sessions_do_not_grow_memory(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    import gc
    import logging
    import tracemalloc

    caplog.set_level(logging.WARNING, logger="jarvis_trio")  # caplog keeps every record
    backend = FakeBackend(interval=0.0, tokens=1)

    async def one_off(manager: SessionManager, i: int) -> None:
        stream = manager.submit("owner", f"one-off-{i}", job("x"), f"req-{i}")
        await manager.wait_turn(stream)
        await stream.collect()
        await stream.producer_ended.wait()
        manager.abandon(stream)

    # Finished streams' output kept for viewers is bounded on its own (the test below);
    # without it, a session that is over must leave nothing at all.
    async with open_manager(backend, retained=0) as manager:
        for i in range(500):  # warm up caches and free lists
            await one_off(manager, i)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        for i in range(500, 10_500):
            await one_off(manager, i)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        assert manager.statistics().sessions == 0
    # What remains is trio's deadline heap, which deletes lazily and prunes itself
    # past ~1000 + 2 x active entries: bounded, whatever the number of sessions.
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"memory kept after 10,000 one-off sessions: {grown} bytes")
    assert grown < 200_000, f"{grown} bytes kept after 10,000 one-off sessions"


async def test_output_kept_for_viewers_is_bounded_by_count_and_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(interval=0.0, tokens=3)
    async with open_manager(backend, retained=50) as manager:
        for i in range(200):
            stream = manager.submit("owner", f"s-{i}", job("x"), f"req-{i}")
            await manager.wait_turn(stream)
            await stream.collect()
            await stream.producer_ended.wait()
            manager.abandon(stream)
        assert manager.statistics().sessions == 0
        assert len(manager._table.retained) == 50
        assert manager.watch("owner", "s-149") is None  # the oldest went first
        newest = manager.watch("owner", "s-199")
        assert newest is not None and newest.count == 3 and newest.ending is not None
        assert manager.watch("someone-else", "s-199") is None
        await trio.sleep(300)  # the default retention
        assert manager.watch("owner", "s-199") is None
        assert len(manager._table.retained) == 0


async def test_a_finished_answer_still_being_read_is_cut_off_before_the_next_starts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found in review: A's buffered output reached its slow client while B streamed."""
    backend = FakeBackend(interval=0.01, tokens=30)
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(1.0)  # A's generation is over; its 30 chunks sit unread
        assert a.producer_done
        assert manager.statistics().live_streams == 1  # still emitting to its client
        b = await start(manager, "B")
        text, ending = await a.collect()
        assert text == ""
        assert ending.outcome is Outcome.SUPERSEDED
        assert b.started_at == trio.current_time()  # no wait: nothing was left to join
        b.close_reader()


async def test_a_finished_answer_read_to_the_end_frees_the_session(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(interval=0.01, tokens=30)
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(1.0)
        assert manager.statistics().sessions == 1
        text, ending = await a.collect()
        assert ending.outcome is Outcome.COMPLETED and len(text.split()) == 30
        assert manager.statistics().sessions == 0


async def test_a_client_that_stops_reading_is_not_blamed_on_the_model(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: a slow reader ended as "No output for N s" from a healthy model."""
    backend = FakeBackend(interval=0.01, tokens=1000)
    observer = RecordingObserver()
    async with open_manager(backend, inactivity=5.0, observer=observer) as manager:
        a = await start(manager, "A")
        await trio.sleep(6.0)  # the client pauses; the buffer fills in 0.64 s
        assert a.tokens == 64  # the buffer filled; the blocked send never completed
        text, ending = await a.collect()
        assert ending.outcome is Outcome.DISCONNECTED
        assert text == ""  # treated as gone: its reader is cut off, as on any disconnect
        assert manager.statistics().sessions == 0
        assert backend.ends["A"] == pytest.approx(backend.starts["A"] + 0.64 + 5.0)
        # Cut off through the rules, as any disconnect: one join, of 0 s (its task is over).
        assert observer.joins == [(True, 0.0)]
    reasons = [
        r.__dict__.get("jarvis_fields", {}).get("reason")
        for r in caplog.records
        if r.getMessage() == "stream_cancelled"
    ]
    assert reasons == ["client_not_reading", "disconnected"]


async def test_first_token_timeout_is_separate_and_longer_than_inactivity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(silent_after={"loading": 0, "stalled": 1})
    async with open_manager(backend, inactivity=5.0, first_token=60.0) as manager:
        loading = await start(manager, "loading", session="a")
        stalled = await start(manager, "stalled", session="b")
        endings = {}

        async def read(stream: Stream) -> None:
            endings[stream.job.prompt] = (await stream.collect())[1]

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, loading)
            nursery.start_soon(read, stalled)
        loading_end, stalled_end = endings["loading"], endings["stalled"]
    assert loading_end.outcome is Outcome.FIRST_TOKEN_TIMEOUT
    assert loading_end.error is not None and loading_end.error.code == "first_token_timeout"
    assert backend.ends["loading"] == backend.starts["loading"] + 60.0
    assert stalled_end.outcome is Outcome.INACTIVITY
    assert backend.ends["stalled"] == backend.starts["stalled"] + 0.1 + 5.0


async def test_stop_of_a_finished_answer_still_being_read_cuts_its_reader(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Stop must take its join target before releasing it (this was a KeyError)."""
    backend = FakeBackend(interval=0.01, tokens=30)
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await trio.sleep(1.0)  # generation over, nothing read
        report = await manager.stop("owner", "s1")
        assert report.result == "finished_cleanly" and report.stream_id == a.id
        assert report.waited_ms == 0
        text, ending = await a.collect()
        assert text == "" and ending.outcome is Outcome.STOPPED
        assert manager.statistics().sessions == 0


async def test_a_finished_answer_whose_client_stops_reading_is_released(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found in review: with no newer prompt, its session was held forever."""
    backend = FakeBackend(interval=0.01, tokens=10)
    async with open_manager(backend, inactivity=5.0) as manager:
        a = await start(manager, "A", session=None)
        batches = a.batches()
        await anext(batches)  # the client reads once, then never again
        await trio.sleep(1.0)
        assert a.producer_done and manager.statistics().sessions == 1
        await trio.sleep(5.0)
        assert manager.statistics().sessions == 0
        assert a.cancel_reason is CancelReason.DISCONNECTED
        await batches.aclose()


async def test_a_cancelled_stream_ending_past_its_budget_is_a_timed_out_join(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Found in review: with nobody watching the deadline it was counted clean."""
    backend = FakeBackend(die_after={"A": 10.0})
    observer = RecordingObserver()
    async with open_manager(backend, observer=observer) as manager:
        a = await start(manager, "A")
        manager.abandon(a)  # a disconnect: no waiter, no Stop
        await a.producer_ended.wait()
        assert (observer.joins_clean, observer.joins_timed_out) == (0, 1)


async def read_batches(stream: Stream, coalesce: float) -> tuple[list[int], list[object]]:
    """Every batch of ``stream`` read with a ``coalesce`` window: their sizes, their pieces."""
    sizes: list[int] = []
    pieces: list[object] = []
    async for batch in stream.batches(coalesce=coalesce):
        sizes.append(len(batch))
        pieces.extend(batch)
    return sizes, pieces


async def test_coalesced_batches_gather_what_arrives_within_the_window_and_lose_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(interval=0.01, tokens=20)
    async with open_manager(backend) as manager:
        stream = await start(manager, "A")
        await stream.wait_ready()
        sizes, pieces = await read_batches(stream, 0.045)
        # The first batch never waits; later ones carry the tokens of their window.
        assert sizes[0] == 1 and max(sizes[1:]) == 5 and sum(sizes) == 20
        assert pieces == [f"A-{i} " for i in range(20)]
        assert stream.final_ending().outcome is Outcome.COMPLETED


async def test_the_end_of_the_answer_cuts_a_coalescing_window_short(
    autojump_clock: trio.testing.MockClock,
) -> None:
    backend = FakeBackend(interval=0.01, tokens=5)
    async with open_manager(backend) as manager:
        stream = await start(manager, "A")
        await stream.wait_ready()
        started = trio.current_time()
        sizes, pieces = await read_batches(stream, 10.0)
        # The second window closes when the answer ends (0.05 s), not after its 10 s.
        assert trio.current_time() - started < 0.1
        assert sizes == [1, 4] and pieces == [f"A-{i} " for i in range(5)]
        assert stream.final_ending().outcome is Outcome.COMPLETED


async def test_a_model_faster_than_the_window_ends_it_at_half_the_buffer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A window never lets the channel fill up: at half of it the batch goes out, so
    the model is not held back (no send of it waits for room when a batch is taken)."""
    backend = FakeBackend(interval=0.001, tokens=300)
    async with open_manager(backend) as manager:
        stream = await start(manager, "A")
        await stream.wait_ready()
        started = trio.current_time()
        sizes, pieces = [], []
        async for batch in stream.batches(coalesce=10.0):
            sizes.append(len(batch))
            pieces.extend(batch)
            assert not stream.blocked_on_reader
        assert pieces == [f"A-{i} " for i in range(300)]
        assert max(sizes) == 1 + CHANNEL_BUFFER // 2  # its first piece, then half the buffer
        assert trio.current_time() - started < 1.0  # the model's own 0.3 s, not windows


@pytest.mark.parametrize("case", ["ended", "half_full"])
async def test_a_window_with_nothing_to_wait_for_takes_what_is_there_at_once(
    case: str, autojump_clock: trio.testing.MockClock
) -> None:
    """The reader's write to its client was slow; meanwhile the answer ended, or half
    the buffer queued up and the model paused. The next window does not wait."""
    if case == "ended":
        backend, expected = FakeBackend(interval=0.01, tokens=5), [1, 4]
    else:
        backend = FakeBackend(interval=0.001, tokens=1000, silent_after={"A": 40})
        expected = [1, 39]
    async with open_manager(backend) as manager:
        stream = await start(manager, "A")
        await stream.wait_ready()
        sizes: list[int] = []
        written_at = 0.0
        async for batch in stream.batches(coalesce=10.0):
            sizes.append(len(batch))
            if len(sizes) == 2:
                break
            if case == "ended":
                await stream.producer_ended.wait()  # the slow write spans the end
            else:
                await trio.sleep(1.0)  # 39 pieces queue up, then the model pauses
            written_at = trio.current_time()
        assert trio.current_time() == written_at
        assert sizes == expected
        stream.close_reader()


async def test_a_cancel_cuts_a_coalescing_window_short_and_nothing_after_it_is_read(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The cancel comes while the reader waits inside a window (found in review: the
    earlier version cancelled between batches, where no window is open). A takes 5 s to
    die, so its channel stays open: only the cancel's wake-up can end the wait."""
    backend = FakeBackend(interval=0.01, die_after={"A": 5.0})
    async with open_manager(backend) as manager:
        a = await start(manager, "A")
        await a.wait_ready()
        read: list[object] = []
        ended_at: list[float] = []
        first_read = trio.Event()

        async def reader() -> None:
            async for batch in a.batches(coalesce=10.0):
                read.extend(batch)
                first_read.set()
            ended_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await first_read.wait()
            await trio.sleep(0.05)  # the reader is in its second batch's 10 s window
            b = manager.submit("owner", "s1", job("B"), "req-B")
            cancelled_at = trio.current_time()
        assert ended_at == [cancelled_at]  # not the window's 10 s, nor A's 5 s to die
        assert read == ["A-0 "]  # the window's pieces came before the cancel: never read
        assert a.final_ending().outcome is Outcome.SUPERSEDED
        await manager.wait_turn(b)
        b.close_reader()
