"""The session rules, driven by plain function calls: no event loop, no clock."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from jarvis_trio.rules import (
    Action,
    Cancel,
    CancelReason,
    Joined,
    JoinTimedOut,
    Reject,
    RuleError,
    SessionRules,
    Start,
    StreamState,
    Wait,
)

SUP = CancelReason.SUPERSEDED


def rules() -> SessionRules:
    return SessionRules(join_budget=2.0)


def test_first_request_starts_at_once() -> None:
    s = rules()
    assert s.submit("a", now=0.0) == ([Start("a")], None)
    assert s.live == "a"
    assert not s.idle


def test_finished_live_stream_leaves_session_idle() -> None:
    s = rules()
    s.submit("a", 0.0)
    assert s.release("a") == []
    assert s.idle


def test_new_request_cancels_live_and_waits_for_its_join() -> None:
    s = rules()
    s.submit("a", 0.0)
    actions, wait = s.submit("b", now=5.0)
    assert actions == [Cancel("a", SUP)]
    assert wait == Wait(joining="a", deadline=7.0)
    assert s.live is None and s.dying == "a" and s.waiter == "b"


def test_waiter_starts_when_cancelled_stream_finishes() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.0)
    assert s.release("a") == [Joined("a"), Start("b", after="a", clean=True)]
    assert s.live == "b" and s.dying is None and s.waiter is None


def test_waiter_starts_when_join_budget_runs_out_and_old_stream_becomes_zombie() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.0)
    assert s.deadline_passed(now=1.999) == []
    assert s.deadline_passed(now=2.0) == [JoinTimedOut("a"), Start("b", after="a", clean=False)]
    assert s.live == "b" and s.zombies == {"a"}
    # The zombie no longer blocks anything, and is forgotten when it ends.
    assert s.release("a") == []
    assert s.release("b") == []
    assert s.idle


def test_new_prompt_supersedes_waiting_one_which_never_starts() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.0)
    actions, wait = s.submit("c", now=1.0)
    assert actions == [Reject("b", SUP)]
    # The deadline stays anchored to a's cancel: c never waits longer than b would have.
    assert wait == Wait("a", 2.0)
    assert s.release("a") == [Joined("a"), Start("c", after="a", clean=True)]


def test_submit_after_expired_budget_with_nobody_waiting_starts_at_once() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.cancel("a", CancelReason.DISCONNECTED, 0.0)
    actions, wait = s.submit("b", now=3.0)
    assert actions == [JoinTimedOut("a"), Start("b")]
    assert wait is None


def test_submit_at_expiry_instant_rejects_old_waiter_and_starts_newest() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.0)
    actions, wait = s.submit("c", now=2.0)
    assert actions == [Reject("b", SUP), JoinTimedOut("a"), Start("c")]
    assert wait is None and s.live == "c"


def test_disconnect_of_waiter_rejects_it_and_keeps_join_running() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.0)
    assert s.cancel("b", CancelReason.DISCONNECTED, 0.5) == [Reject("b", CancelReason.DISCONNECTED)]
    assert s.release("a") == [Joined("a")]
    assert s.idle


def test_disconnect_of_live_stream_cancels_it() -> None:
    s = rules()
    s.submit("a", 0.0)
    assert s.cancel("a", CancelReason.DISCONNECTED, 1.0) == [Cancel("a", CancelReason.DISCONNECTED)]
    assert s.dying == "a" and s.deadline == 3.0


def test_cancel_of_unknown_or_already_cancelled_stream_is_a_noop() -> None:
    s = rules()
    assert s.cancel("ghost", CancelReason.DISCONNECTED, 0.0) == []
    s.submit("a", 0.0)
    s.cancel("a", CancelReason.STOPPED, 0.0)
    assert s.cancel("a", CancelReason.DISCONNECTED, 0.1) == []


def test_stop_cancels_live_and_returns_the_join_to_wait_for() -> None:
    s = rules()
    s.submit("a", 0.0)
    actions, wait = s.cancel_all(CancelReason.STOPPED, now=1.0)
    assert actions == [Cancel("a", CancelReason.STOPPED)]
    assert wait == Wait("a", 3.0)


def test_stop_while_a_request_waits_rejects_it_and_joins_the_dying_stream() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.submit("b", 0.5)
    actions, wait = s.cancel_all(CancelReason.STOPPED, now=1.0)
    assert actions == [Reject("b", CancelReason.STOPPED)]
    assert wait == Wait("a", 2.5)


def test_stop_with_nothing_live_does_nothing() -> None:
    s = rules()
    assert s.cancel_all(CancelReason.STOPPED, 0.0) == ([], None)


def test_request_after_stop_waits_for_the_stopped_stream() -> None:
    s = rules()
    s.submit("a", 0.0)
    s.cancel_all(CancelReason.STOPPED, 0.0)
    actions, wait = s.submit("b", 1.0)
    assert actions == [] and wait == Wait("a", 2.0)


def test_disallowed_transitions_raise() -> None:
    s = rules()
    with pytest.raises(RuleError):
        s.release("never-started")
    s.submit("a", 0.0)
    with pytest.raises(RuleError):
        s.submit("a", 0.0)
    s.submit("b", 0.0)
    with pytest.raises(RuleError):
        s.release("b")  # a waiter has no task to finish
    with pytest.raises(RuleError):
        SessionRules(join_budget=-1)


def test_storm_a_b_c_d_only_the_newest_starts() -> None:
    s = rules()
    s.submit("a", 0.0)
    rejected: list[str] = []
    for i, stream in enumerate("bcdefg"):
        actions, _ = s.submit(stream, now=0.1 * i)
        rejected += [a.stream for a in actions if isinstance(a, Reject)]
    assert rejected == list("bcdef")
    assert s.release("a") == [Joined("a"), Start("g", after="a", clean=True)]


def test_state_of_names_where_each_stream_stands() -> None:
    s = rules()
    s.submit("a", 0.0)
    assert s.state_of("a") is StreamState.LIVE
    s.submit("b", 0.0)
    assert (s.state_of("a"), s.state_of("b")) == (StreamState.CANCELLING, StreamState.WAITING)
    s.deadline_passed(2.0)
    assert (s.state_of("a"), s.state_of("b")) == (StreamState.ZOMBIE, StreamState.LIVE)
    s.release("a")
    assert s.state_of("a") is None


# --- Random interleavings -------------------------------------------------------------


class SessionMachine(RuleBasedStateMachine):
    """Random submit / finish / cancel / disconnect / time passing on one session.

    The model is built only from the *actions* the rules return, not from
    their fields, so it checks what the glue would actually do.
    """

    def __init__(self) -> None:
        super().__init__()
        self.session = SessionRules(join_budget=2.0)
        self.now = 0.0
        self.counter = 0
        self.submitted: list[str] = []
        self.started: set[str] = set()
        self.cancelled: set[str] = set()  # started, then told to stop emitting
        self.task_running: set[str] = set()  # started tasks that have not finished
        self.resolved: dict[str, str] = {}  # request -> "started" / reject reason
        self.waiting: set[str] = set()
        self.withdrawn_or_stopped: set[str] = set()
        self.joins: dict[str, str] = {}  # cancelled stream -> "clean" / "timed_out"

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Start):
                assert action.stream not in self.resolved, "resolved twice"
                self.resolved[action.stream] = "started"
                self.waiting.discard(action.stream)
                self.started.add(action.stream)
                self.task_running.add(action.stream)
            elif isinstance(action, Cancel):
                assert action.stream in self.task_running
                self.cancelled.add(action.stream)
            elif isinstance(action, Reject):
                assert action.stream not in self.resolved, "resolved twice"
                self.resolved[action.stream] = action.reason.value
                self.waiting.discard(action.stream)
            elif isinstance(action, Joined | JoinTimedOut):
                assert action.stream in self.cancelled, "a join of a stream never cancelled"
                assert action.stream not in self.joins, "a join decided twice"
                self.joins[action.stream] = "clean" if isinstance(action, Joined) else "timed_out"

    @rule(gap=st.sampled_from([0.0, 0.0, 0.3, 1.0, 2.5]))
    def submit(self, gap: float) -> None:
        self.now += gap
        self.counter += 1
        stream = f"r{self.counter}"
        self.submitted.append(stream)
        actions, wait = self.session.submit(stream, self.now)
        self.apply(actions)
        if wait is not None:
            assert wait.deadline <= self.now + 2.0
            self.waiting.add(stream)

    @precondition(lambda self: bool(self.task_running))
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        stream = data.draw(st.sampled_from(sorted(self.task_running)))
        self.task_running.discard(stream)
        self.apply(self.session.release(stream))

    @rule(
        data=st.data(),
        reason=st.sampled_from([CancelReason.DISCONNECTED, CancelReason.INACTIVITY]),
    )
    def cancel_one(self, data: st.DataObject, reason: CancelReason) -> None:
        if not self.submitted:
            return
        stream = data.draw(st.sampled_from(self.submitted))
        self.withdrawn_or_stopped.add(stream)
        self.apply(self.session.cancel(stream, reason, self.now))

    @rule()
    def stop(self) -> None:
        self.withdrawn_or_stopped.update(self.submitted)
        actions, _ = self.session.cancel_all(CancelReason.STOPPED, self.now)
        self.apply(actions)

    @rule(gap=st.sampled_from([0.5, 2.0, 3.0]))
    def time_passes(self, gap: float) -> None:
        self.now += gap
        self.apply(self.session.deadline_passed(self.now))

    @invariant()
    def at_most_one_stream_may_emit(self) -> None:
        emitting = self.started - self.cancelled - (self.started - self.task_running)
        assert len(emitting) <= 1

    @invariant()
    def at_most_one_request_waits(self) -> None:
        assert len(self.waiting) <= 1

    @invariant()
    def only_older_requests_are_superseded(self) -> None:
        if self.submitted:
            newest = self.submitted[-1]
            assert self.resolved.get(newest) != SUP.value

    def teardown(self) -> None:
        # Let every task finish and every budget run out: nothing may be lost.
        for _ in range(len(self.submitted) + 2):
            self.now += 3.0
            self.apply(self.session.deadline_passed(self.now))
            for stream in sorted(self.task_running):
                self.task_running.discard(stream)
                self.apply(self.session.release(stream))
        assert self.session.idle
        assert not self.waiting
        for stream in self.submitted:
            assert stream in self.resolved, f"{stream} was never started nor rejected"
        # Every started stream that was cancelled had its join decided exactly once.
        assert set(self.joins) == self.cancelled
        if self.submitted:
            newest = self.submitted[-1]
            if newest not in self.withdrawn_or_stopped:
                assert self.resolved[newest] == "started"


TestSessionMachine = SessionMachine.TestCase
TestSessionMachine.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
