"""What the session manager reports as it goes; the metrics implement it."""

from __future__ import annotations

from typing import Protocol

from jarvis_trio.outcomes import Outcome


class Observer(Protocol):
    """What the manager reports as it goes (metrics implement it; the default ignores it)."""

    def stream_started(self) -> None: ...

    def stream_ended(self, outcome: Outcome, seconds: float) -> None: ...

    def join_finished(self, clean: bool, seconds: float) -> None:
        """A cancelled stream was released within its join budget (``clean``; its task
        ended, and its reader was cut off), or the budget ran out first."""

    def cancel_to_closed(self, seconds: float) -> None:
        """From a stream's cancel until its backend returned (its upstream closed)."""

    def first_token(self, seconds: float) -> None: ...

    def stream_refused(self, reason: str) -> None:
        """A request was not admitted (``full``, ``shutting_down``)."""


class NullObserver:
    def stream_started(self) -> None:
        pass

    def stream_ended(self, outcome: Outcome, seconds: float) -> None:
        pass

    def join_finished(self, clean: bool, seconds: float) -> None:
        pass

    def cancel_to_closed(self, seconds: float) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def stream_refused(self, reason: str) -> None:
        pass
