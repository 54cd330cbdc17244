"""The relays' shared wake-up: one ``run_sync_soon`` for every relay woken before it runs."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
import trio

from jarvis_trio.relay import PieceRelay, _Wakeups


class QueueToken:
    """Stands in for a ``TrioToken``: keeps the callbacks instead of running them."""

    def __init__(self, finished: bool = False) -> None:
        self.queued: list[Callable[[], object]] = []
        self.finished = finished

    def run_sync_soon(self, callback: Callable[[], object]) -> None:
        if self.finished:
            raise trio.RunFinishedError("the run is over")
        self.queued.append(callback)


class Woken:
    """Stands in for a relay: records its wake-ups."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.name, self.log = name, log

    def _wake_pump(self) -> None:
        self.log.append(self.name)


def wakeups(token: QueueToken) -> _Wakeups:
    return _Wakeups(cast(trio.lowlevel.TrioToken, token))


def relay(name: str, log: list[str]) -> PieceRelay:
    return cast(PieceRelay, Woken(name, log))


def test_relays_woken_before_the_callback_runs_share_it_and_each_is_woken_in_order() -> None:
    token, log = QueueToken(), list[str]()
    hub = wakeups(token)
    a, b = relay("a", log), relay("b", log)
    hub.wake(a)
    hub.wake(b)
    hub.wake(a)  # a closing relay wakes again: woken twice, as with two callbacks
    assert len(token.queued) == 1
    token.queued.pop()()
    assert log == ["a", "b", "a"]
    hub.wake(b)  # after the callback took the list: a new one
    assert len(token.queued) == 1
    token.queued.pop()()
    assert log == ["a", "b", "a", "b"]


def test_a_wake_after_the_run_ended_raises_every_time() -> None:
    token = QueueToken(finished=True)
    hub = wakeups(token)
    for _ in range(2):  # the failed schedule is not taken for a queued one
        with pytest.raises(trio.RunFinishedError):
            hub.wake(relay("a", []))
