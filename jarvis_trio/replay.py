"""What a stream sent, kept for viewers: a page that was refreshed re-attaches here.

Theory of operation
-------------------
Every piece of text a stream emits is appended to its :class:`ReplayLog` with a
sequence number (1, 2, ...), the same number its SSE event carries as
``id: <stream id>:<n>``. A viewer reads the log from any sequence number on and
then waits for more, so a refreshed page gets the whole answer so far, then the
rest live; ``Last-Event-ID`` resumes after the last event it saw.

A viewer is read-only: it never counts as a request, never holds its session
and never cancels anything. It cannot slow the model either: the log is not a
channel, the stream appends and never waits.

Bounds: a log keeps at most ``limit_chars`` characters of text, each piece
counted as at least ``PIECE_COST`` characters (what a tiny piece really costs in
memory); past that the oldest pieces are dropped, and a viewer that asks for
them is told so (``truncated``). At most ``MAX_VIEWERS`` viewers read one log.
:class:`RetainedLogs` keeps the logs of finished streams for a
while (newest stream per session only), so a page refreshed just as its answer
ended still learns how it ended.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

import trio

from jarvis_trio.generation import Output
from jarvis_trio.outcomes import Ending

# What one piece counts against the bound at least: its str object and its slot.
PIECE_COST = 64
# Viewers of one stream at once (a refreshed tab needs one; a few more for other tabs).
MAX_VIEWERS = 8
# Pieces a viewer gets in one write at most, so a long replay is not one huge string.
REPLAY_BATCH = 256


@dataclass(frozen=True, slots=True)
class Replay:
    """The pieces after a cursor: ``pieces[i]`` has sequence number ``first + i``."""

    first: int
    pieces: tuple[Output, ...]
    truncated: bool  # some pieces the viewer asked for were dropped (the bound)

    @property
    def last(self) -> int:
        return self.first + len(self.pieces) - 1


def _cost(piece: Output) -> int:
    return max(len(piece) if isinstance(piece, str) else piece.size(), PIECE_COST)


class ReplayLog:
    def __init__(
        self,
        stream_id: str,
        model: str,
        created: int,
        *,
        limit_chars: int,
        request_id: str | None = None,
    ) -> None:
        self.stream_id = stream_id
        # The X-Request-Id of the request that made the stream: a refreshed page that
        # never saw the stream's id checks it is re-attaching to its own request.
        self.request_id = request_id
        self.model = model
        self.created = created
        self.limit_chars = limit_chars
        self._pieces: deque[Output] = deque()
        # Invariant: ``_pieces[i]`` has sequence number ``_first + i``.
        self._first = 1
        self._chars = 0
        self.ending: Ending | None = None
        self.ended_at: float | None = None
        self.viewers = 0
        # Set at the next change (a piece, the end, a viewer coming or going), then
        # dropped. Made only when someone waits: a stream nobody watches allocates no
        # event per token.
        self._changed: trio.Event | None = None

    @property
    def count(self) -> int:
        """Pieces appended so far (the last sequence number)."""
        return self._first + len(self._pieces) - 1

    def append(self, text: Output) -> None:
        if self.ending is not None:
            return
        self._pieces.append(text)
        self._chars += _cost(text)
        while self._chars > self.limit_chars and len(self._pieces) > 1:
            self._chars -= _cost(self._pieces.popleft())
            self._first += 1
        self._notify()

    def end(self, ending: Ending) -> None:
        if self.ending is None:
            self.ending = ending
            self.ended_at = trio.current_time()
            self._notify()

    def after(self, cursor: int, limit: int | None = None) -> Replay:
        """The pieces with sequence numbers above ``cursor`` that are still kept (at most
        ``limit`` of them)."""
        start = max(cursor + 1, self._first)
        stop = (
            len(self._pieces)
            if limit is None
            else min(len(self._pieces), start - self._first + limit)
        )
        pieces = tuple(self._pieces[i] for i in range(start - self._first, stop))
        return Replay(start, pieces, truncated=start > cursor + 1)

    def changed(self) -> trio.Event:
        """An event that is set at the next change (read it before checking state)."""
        if self._changed is None:
            self._changed = trio.Event()
        return self._changed

    def viewer_joined(self) -> None:
        self.viewers += 1
        self._notify()

    def viewer_left(self) -> None:
        self.viewers -= 1
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None


def parse_last_event_id(value: str | None, stream_id: str) -> int:
    """The sequence number to resume after; 0 (from the start) unless ``value`` is
    ``<stream_id>:<n>`` for this very stream. Per the SSE spec the id is opaque to
    the client, so anything else (another stream's id, garbage) replays everything."""
    if not value:
        return 0
    prefix, sep, number = value.strip().rpartition(":")
    if sep and prefix == stream_id and number.isascii() and number.isdigit() and len(number) < 10:
        return int(number)
    return 0


class RetainedLogs:
    """Logs of finished streams, newest per session, for ``retention`` seconds, at most
    ``capacity`` of them (the oldest goes first). Time is passed in."""

    def __init__(self, *, retention: float, capacity: int) -> None:
        self.retention = retention
        self.capacity = capacity
        self._logs: OrderedDict[tuple[str, str], ReplayLog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def keep(self, key: tuple[str, str], log: ReplayLog, now: float) -> None:
        self._logs.pop(key, None)
        if self.capacity > 0 and self.retention > 0:
            self._logs[key] = log
        self._prune(now)

    def get(self, key: tuple[str, str], now: float) -> ReplayLog | None:
        self._prune(now)
        log = self._logs.get(key)
        if log is not None and self._expired(log, now):
            # Kept in the order they were kept, which is not quite the order they
            # ended: an expired log can sit behind one that has not expired yet.
            del self._logs[key]
            return None
        return log

    def _expired(self, log: ReplayLog, now: float) -> bool:
        return log.ended_at is not None and now - log.ended_at >= self.retention

    def drop(self, key: tuple[str, str]) -> None:
        self._logs.pop(key, None)

    def _prune(self, now: float) -> None:
        # Roughly in the order they ended: expired ones gather at the front.
        while self._logs:
            key, log = next(iter(self._logs.items()))
            if not self._expired(log, now) and len(self._logs) <= self.capacity:
                return
            del self._logs[key]
