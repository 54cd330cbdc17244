"""The notes' ``StreamRegistry``: one entry per session, guarded by an ``asyncio.Lock``.

Faithful to the notes (``002``, "The Fix (3 Changes)")
-----------------------------------------------------
``register(entry)``:

1. takes the lock, looks up the session's previous entry, cancels its task
   (``task.cancel()``), sets its cancel flag (the notes' ``set_stream_cancelled``)
   and logs ``stream_cancelled``;
2. releases the lock ("allow old stream to finish cleanup");
3. ``await asyncio.wait_for(prev_task, timeout=2.0)``: ``prev_stream_finished_cleanly``
   if it returns (however the task ended), ``prev_stream_timeout_on_cancel`` on timeout;
4. takes the lock again and registers the new entry.

``cancel(trace_id, reason)`` is the notes' second change; ``pop(trace_id)`` is what
the stream's ``finally`` calls. Stop (:meth:`StreamRegistry.stop`) is our API on
the same two steps: cancel, then ``wait_for`` within the same 2 s.

Known weaknesses (kept on purpose: this is the baseline)
-------------------------------------------------------
* **"Finished" means the task, not the read.** ``prev_task`` is the asyncio task
  that serves the old stream. Cancelling it abandons the ``asyncio.to_thread``
  call it awaits: the task ends within a few event-loop turns, so ``wait_for``
  returns and ``prev_stream_finished_cleanly`` is logged, while the worker
  thread still reads the old upstream answer (a silent one: forever). The 2 s
  timeout would need the old *task* to take that long to end after its cancel,
  and in this server it practically never does: the thread is not awaited.
* **No "latest wins".** The session points at its registered entry only. While B
  waits for A, B is not registered, so a C that arrives then finds A again
  (or nothing, if A already popped itself) and starts without regard to B;
  when B's wait ends B registers too. Both stream, one session, and the
  session now points at whichever registered last: the other one can no
  longer be superseded or stopped. :meth:`StreamRegistry.register` logs
  ``session_entry_overwritten`` when it sees this.
* **A second cancel lands in the old stream's cleanup.** C's ``task.cancel()``
  on an A that is already in its ``finally`` interrupts that ``finally`` at its
  next ``await``.
* ``asyncio.wait_for`` on Python 3.11, after its timeout, cancels the task again
  and then waits for it *without* a bound; and a waiter that is itself cancelled
  (its client left) cancels the task it waited for.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from jarvis_trio import logs
from jarvis_trio.rules import CancelReason

# The notes' constant ("line 209: timeout=2.0").
PREV_STREAM_TIMEOUT = 2.0


@dataclass(eq=False)
class StreamEntry:
    """The notes' ``_StreamEntry``: ``trace_id``, ``session_id``, ``task`` and the flag."""

    trace_id: str
    session_id: str | None
    task: asyncio.Task[Any]
    # The notes' per-trace "stream cancelled" flag, polled by the reader thread
    # between chunks. A threading.Event: set on the event loop, read in the thread.
    cancelled: threading.Event = field(default_factory=threading.Event)
    # Why the registry cancelled the task; None for any other cancellation
    # (Starlette's on client disconnect, the server's on shutdown).
    reason: CancelReason | None = None


@dataclass(frozen=True, slots=True)
class StopReport:
    """What Stop did: ``finished_cleanly``, ``join_timeout`` or ``nothing_live``."""

    result: str
    stream_id: str | None = None
    waited_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RegistryStatistics:
    sessions: int
    live_streams: int


class StreamRegistry:
    def __init__(self, prev_stream_timeout: float = PREV_STREAM_TIMEOUT) -> None:
        self.prev_stream_timeout = prev_stream_timeout
        self._lock = asyncio.Lock()
        self._by_trace: dict[str, StreamEntry] = {}
        # Invariant (the notes' intent, not enforced): at most one trace per session.
        self._by_session: dict[str, str] = {}

    async def register(self, entry: StreamEntry) -> None:
        prev: StreamEntry | None = None
        async with self._lock:
            if entry.session_id is not None:
                prev_trace = self._by_session.get(entry.session_id)
                prev = self._by_trace.get(prev_trace) if prev_trace is not None else None
                if prev is not None:
                    self._cancel_entry(prev, CancelReason.SUPERSEDED)
        # The lock is released: the old stream's finally needs it to pop itself.
        if prev is not None:
            await self._wait_for(prev)
        async with self._lock:
            if entry.session_id is not None:
                current = self._by_session.get(entry.session_id)
                if current is not None and current in self._by_trace:
                    # C-while-B-waits: another request registered in this session
                    # while we waited. The notes have no rule for it; both stream.
                    logs.event(
                        "session_entry_overwritten",
                        level=logging.WARNING,
                        session=entry.session_id,
                        trace=entry.trace_id,
                        replaced=current,
                    )
                self._by_session[entry.session_id] = entry.trace_id
            self._by_trace[entry.trace_id] = entry

    async def cancel(self, trace_id: str, reason: CancelReason) -> StreamEntry | None:
        """Cancel one stream's task and set its flag; ``None`` if it is not registered."""
        async with self._lock:
            entry = self._by_trace.get(trace_id)
            if entry is not None:
                self._cancel_entry(entry, reason)
            return entry

    async def pop(self, trace_id: str) -> None:
        async with self._lock:
            entry = self._by_trace.pop(trace_id, None)
            session = entry.session_id if entry is not None else None
            if session is not None and self._by_session.get(session) == trace_id:
                del self._by_session[session]

    async def stop(self, session_id: str) -> StopReport:
        """Stop: cancel the session's stream, then ``wait_for`` it with the same timeout."""
        async with self._lock:
            trace = self._by_session.get(session_id)
            entry = self._by_trace.get(trace) if trace is not None else None
            if entry is None:
                return StopReport("nothing_live")
            self._cancel_entry(entry, CancelReason.STOPPED)
        loop = asyncio.get_running_loop()
        started = loop.time()
        clean = await self._wait_for(entry)
        waited_ms = (loop.time() - started) * 1000
        return StopReport(
            "finished_cleanly" if clean else "join_timeout", entry.trace_id, waited_ms
        )

    def statistics(self) -> RegistryStatistics:
        return RegistryStatistics(sessions=len(self._by_session), live_streams=len(self._by_trace))

    # -- helpers

    def _cancel_entry(self, entry: StreamEntry, reason: CancelReason) -> None:
        if entry.reason is None:
            entry.reason = reason
        entry.task.cancel()
        entry.cancelled.set()
        logs.event("stream_cancelled", trace=entry.trace_id, reason=reason.value)

    async def _wait_for(self, prev: StreamEntry) -> bool:
        """``await asyncio.wait_for(prev_task, timeout=2.0)``; True unless it timed out."""
        try:
            await asyncio.wait_for(prev.task, timeout=self.prev_stream_timeout)
        except TimeoutError:
            logs.event(
                "prev_stream_timeout_on_cancel",
                level=logging.WARNING,
                session=prev.session_id,
                trace=prev.trace_id,
            )
            return False
        except asyncio.CancelledError:
            # Awaiting a task that ended cancelled raises here too. Only a cancel
            # of *our* task (our client left) may propagate.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        except Exception:
            pass  # it ended with an error: it has finished all the same
        logs.event("prev_stream_finished_cleanly", session=prev.session_id, trace=prev.trace_id)
        return True
