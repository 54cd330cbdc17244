"""The replay log viewers read, and the retention of finished streams' logs."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from jarvis_trio.generation import Output
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.replay import PIECE_COST, Replay, ReplayLog, RetainedLogs, parse_last_event_id
from jarvis_trio.rules import CancelReason


def log_of(*pieces: str, limit: int = 1000) -> ReplayLog:
    log = ReplayLog("chatcmpl-1", "m", 1, limit_chars=limit)
    for piece in pieces:
        log.append(piece)
    return log


def test_pieces_are_numbered_from_one_and_read_after_a_cursor() -> None:
    log = log_of("a", "b", "c")
    assert log.count == 3
    replay = log.after(1)
    assert (replay.first, replay.pieces, replay.last, replay.truncated) == (2, ("b", "c"), 3, False)
    assert log.after(3).pieces == ()
    assert log.after(0).pieces == ("a", "b", "c")


def test_the_bound_drops_the_oldest_pieces_and_says_so() -> None:
    big = "x" * 100
    log = log_of("a" + big, "b" + big, "c" + big, "d" + big, limit=250)
    assert log.count == 4
    replay = log.after(0)
    assert replay.pieces == ("c" + big, "d" + big)  # 202 characters kept of 404
    assert (replay.first, replay.truncated) == (3, True)
    assert log.after(2) == Replay(3, ("c" + big, "d" + big), truncated=False)
    assert log.after(0, limit=1).pieces == ("c" + big,)
    assert log.after(0, limit=0) == Replay(3, (), truncated=True)


def test_tiny_pieces_count_as_their_memory_not_their_length() -> None:
    log = log_of(*"abcdefghij", limit=5 * PIECE_COST)
    assert log.after(0).pieces == tuple("fghij")


def test_a_piece_larger_than_the_bound_is_still_kept() -> None:
    log = log_of("x" * 500, limit=100)
    assert log.after(0).pieces == ("x" * 500,)


async def test_the_end_is_final_and_later_pieces_are_ignored() -> None:
    log = log_of("a")
    log.end(Ending.cancelled(CancelReason.SUPERSEDED))
    log.append("late")
    log.end(Ending(Outcome.ERROR))
    assert log.after(0).pieces == ("a",)
    assert log.ending is not None and log.ending.outcome is Outcome.SUPERSEDED
    assert log.ended_at is not None


async def test_every_change_sets_the_event_read_before_it() -> None:
    log = log_of()
    changes: list[Callable[[], None]] = [
        lambda: log.append("a"),
        log.viewer_joined,
        log.viewer_left,
    ]
    for change in changes:
        event = log.changed()
        assert not event.is_set()
        change()
        assert event.is_set() and not log.changed().is_set()
    event = log.changed()
    log.end(Ending(Outcome.COMPLETED))
    assert event.is_set()


async def test_a_waiting_viewer_wakes_on_the_next_piece() -> None:
    log = log_of()
    seen: list[Output] = []

    async def viewer() -> None:
        event = log.changed()
        await event.wait()
        seen.extend(log.after(0).pieces)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(viewer)
        await trio.testing.wait_all_tasks_blocked()
        log.append("hello")
    assert seen == ["hello"]


def test_last_event_id_resumes_only_for_the_same_stream() -> None:
    assert parse_last_event_id("chatcmpl-1:17", "chatcmpl-1") == 17
    assert parse_last_event_id(" chatcmpl-1:0 ", "chatcmpl-1") == 0
    for other in (
        None,
        "",
        "chatcmpl-2:17",
        "17",
        "chatcmpl-1:",
        "chatcmpl-1:-3",
        "chatcmpl-1:1e3",
        "chatcmpl-1:٣",
        "chatcmpl-1:" + "9" * 40,
    ):
        assert parse_last_event_id(other, "chatcmpl-1") == 0, other


def ended_log(at: float) -> ReplayLog:
    log = log_of("a")
    log.ending, log.ended_at = Ending(Outcome.COMPLETED), at
    return log


def test_retained_logs_expire_after_the_retention() -> None:
    retained = RetainedLogs(retention=10, capacity=5)
    log = ended_log(at=100.0)
    retained.keep(("o", "s"), log, now=100.0)
    assert retained.get(("o", "s"), now=109.9) is log
    assert retained.get(("o", "s"), now=110.0) is None
    assert len(retained) == 0


def test_retained_logs_keep_at_most_capacity_oldest_out_first() -> None:
    retained = RetainedLogs(retention=1000, capacity=2)
    for i in range(3):
        retained.keep(("o", str(i)), ended_log(at=float(i)), now=float(i))
    assert len(retained) == 2
    assert retained.get(("o", "0"), now=3.0) is None
    assert retained.get(("o", "2"), now=3.0) is not None
    retained.drop(("o", "2"))
    assert retained.get(("o", "2"), now=3.0) is None


def test_a_retention_of_zero_keeps_nothing() -> None:
    for retained in (RetainedLogs(retention=0, capacity=5), RetainedLogs(retention=5, capacity=0)):
        retained.keep(("o", "s"), ended_log(at=0.0), now=0.0)
        assert retained.get(("o", "s"), now=0.0) is None


def test_an_expired_log_behind_a_fresh_one_is_not_served() -> None:
    """Found in review: logs are kept in the order they were kept, not quite the order
    they ended, so expiry is checked per log too."""
    retained = RetainedLogs(retention=300, capacity=5)
    retained.keep(("o", "late"), ended_log(at=100.0), now=100.0)
    retained.keep(("o", "early"), ended_log(at=0.0), now=101.0)  # ended first, kept last
    assert retained.get(("o", "early"), now=305.0) is None
    assert retained.get(("o", "late"), now=305.0) is not None
