"""Timers that end a stream whose client is gone without saying so.

Both only watch and call back; the session table cancels through the rules (as
a disconnect), like any other cancel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from jarvis_trio import logs
from jarvis_trio.streams import Stream


async def expire_detached(
    stream: Stream, label: str | None, on_unwatched: Callable[[], None]
) -> None:
    """A detached stream that has gone ``resume_seconds`` without a viewer calls
    ``on_unwatched``. Ends when the stream does."""
    log = stream.log
    alone_since: float | None = trio.current_time()
    while log.ending is None:
        changed = log.changed()
        if log.viewers:
            alone_since = None
        elif alone_since is None:
            alone_since = trio.current_time()
        deadline = math.inf if alone_since is None else alone_since + stream.resume_seconds
        if trio.current_time() >= deadline:
            logs.event("stream_unwatched", trace=stream.id, session=label)
            on_unwatched()
            return
        with trio.move_on_at(deadline):
            await changed.wait()


async def cut_off_stuck_reader(stream: Stream, on_stuck: Callable[[], None]) -> None:
    """The answer is complete but its client stopped reading: after the inactivity
    time without a read, ``on_stuck`` (the table treats the client as gone)."""
    inactivity_seconds = stream.inactivity_seconds
    while not stream.reader_done:
        with trio.move_on_at(stream.last_read_at + inactivity_seconds):
            await stream.reader_ended.wait()
        if stream.reader_done or stream.cancel_reason is not None:
            return  # read to the end, or cut off with its cancel
        if trio.current_time() >= stream.last_read_at + inactivity_seconds:
            logs.event("stream_cancelled", trace=stream.id, reason="client_not_reading")
            on_stuck()
            return
