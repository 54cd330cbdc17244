"""benchmarks/steps.py: how a request's marks become its timeline."""

from __future__ import annotations

from benchmarks.steps import REQUEST_STEPS, SUPERSEDE_STEPS, Mark, _timeline


def test_each_step_is_the_first_mark_after_the_one_before() -> None:
    marks: list[Mark] = [
        (9.0, "app", 0),  # an earlier request's: outside the window
        (10.001, "app", 5),
        (10.002, "validated", 9),
        (10.003, "started", 9),
        (10.004, "worker", 12),
        (10.005, "written", 12),  # the head
        (10.006, "written", 12),  # the body: the request is written with the last
        (10.007, "read", 12),
        (10.008, "read", 12),
        (10.009, "relayed", 13),
        (11.0, "app", 20),  # the next request's: outside the window
    ]
    got = _timeline(marks, 10.0, 11.0, REQUEST_STEPS)
    assert [round(t, 3) if t is not None else None for t, _ in filter(None, got)] == [
        1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0,
    ]  # fmt: skip
    assert [p for _, p in filter(None, got)] == [0, 4, 0, 3, 0, 0, 0, 1]


def test_a_step_not_seen_is_none_and_the_rest_still_follows() -> None:
    marks: list[Mark] = [
        (0.001, "app", 0),
        (0.002, "validated", 4),
        (0.003, "eof", 5),  # no "cancelled" mark: the supersede found nothing to cancel
        (0.004, "ended", 6),
    ]
    got = _timeline(marks, 0.0, 1.0, SUPERSEDE_STEPS)
    assert got[2] is None
    assert got[3] is not None and round(got[3][0], 3) == 3.0 and got[3][1] == 1
    assert got[4] is not None and got[4][1] == 1
    assert got[5:] == [None, None, None]


def test_a_window_ends_with_its_round() -> None:
    """A step missing in this round is not filled with the next round's marks."""
    marks: list[Mark] = [
        (0.001, "app", 0),
        (0.002, "validated", 4),  # then refused: no stream, no worker
        (0.070, "app", 9),  # the next round's
        (0.071, "validated", 13),
        (0.072, "started", 13),
        (0.073, "worker", 16),
    ]
    got = _timeline(marks, 0.0, 0.010, REQUEST_STEPS)
    assert got[0] is not None and got[1] is not None
    assert got[2:] == [None] * (len(REQUEST_STEPS) - 2)
