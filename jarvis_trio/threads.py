"""Blocking upstream reads in trio worker threads, cancellable at every point.

Theory of operation
-------------------
:func:`run_in_worker` runs ``fn(token)`` in a worker thread, next to a small
watcher task. When the caller's cancel scope is cancelled (supersede, Stop,
disconnect, inactivity, shutdown: they all arrive this way) the watcher
*fires* the :class:`CancelToken`:

1. the token's event is set, so a thread that polls between chunks, or that
   sleeps in :meth:`CancelToken.wait`, returns at once;
2. the token's callbacks run on the trio thread: a backend registers one that
   shuts its upstream socket down, which is the only thing that frees a thread
   blocked in ``recv()`` on a silent upstream.

The thread is never abandoned (it would keep its limiter token and its
connection): the caller waits for it, which is prompt because of 1 and 2.
Whatever the thread raised after the token fired (our :class:`WorkerCancelled`,
or e.g. httpx's "incomplete chunked read" after the shutdown) is a consequence
of the cancel, not an upstream failure, and is dropped in favour of the
pending ``trio.Cancelled``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import outcome
import trio

from jarvis_trio import logs

T = TypeVar("T")


class WorkerCancelled(Exception):
    """Raised in a worker thread that noticed its token was fired."""


class CancelToken:
    """A one-shot cancellation flag shared by a trio task and one worker thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        """Thread side: the poll between chunks.

        Only the token: the task's cancel fires it one scheduler pass later, and
        asking trio too (``from_thread.check_cancelled``) cost 2 % of the
        instructions per relayed token for that pass (docs/benchmarks.md).
        """
        if self._event.is_set():
            raise WorkerCancelled

    def wait(self, seconds: float) -> None:
        """Thread side: sleep that ends early, raising, when the token fires."""
        if self._event.wait(seconds):
            raise WorkerCancelled

    def add_callback(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` when the token fires (at once if it already has).

        Called from the worker thread; the callback runs on whichever thread
        fires the token, so it must be quick and thread-safe (``sock.shutdown``).
        """
        with self._lock:
            if not self._event.is_set():
                self._callbacks.append(callback)
                return
        callback()

    def finish(self) -> None:
        """Thread side, once its work is over: drop the callbacks, which only ever free a
        blocked thread. A callback names what it frees (a socket's line, a relay, and
        through it a stream with its request), and one names the token itself: a cycle
        that would keep all of it until the cyclic collector runs, which is rarely
        (jarvis_trio/collector.py). A later ``fire`` still marks the token cancelled."""
        with self._lock:
            self._callbacks = []

    def fire(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                # One failing callback must not keep the others (a socket
                # shutdown that frees a blocked thread) from running.
                logs.log.exception("cancel_callback_failed")


async def raise_plain_cancelled(group: BaseExceptionGroup[BaseException]) -> None:
    """If ``group`` holds nothing but ``Cancelled``, raise the pending plain ``Cancelled``.

    A nursery wraps its children's ``Cancelled`` in a group; callers (and their
    ``except trio.Cancelled``) must see a plain one, as from any other await.
    Returns when the group holds something else, for the caller to re-raise.
    """
    if group.split(trio.Cancelled)[1] is None:
        await trio.lowlevel.checkpoint()  # raises the pending Cancelled


async def run_in_worker(
    fn: Callable[[CancelToken], T], *, limiter: trio.CapacityLimiter | None = None
) -> T:
    """Run ``fn(token)`` in a worker thread; cancelling the caller fires the token."""
    token = CancelToken()
    done = False

    def in_thread() -> T:
        try:
            return fn(token)
        finally:
            token.finish()

    async def fire_on_cancel() -> None:
        try:
            await trio.sleep_forever()
        finally:
            if not done:
                token.fire()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(fire_on_cancel)
            result = await trio.to_thread.run_sync(outcome.capture, in_thread, limiter=limiter)
            done = True
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        await raise_plain_cancelled(group)  # the watcher's Cancelled, in a group
        raise
    if token.cancelled:
        # Whatever the thread raised after the token fired is a consequence of
        # the cancel; re-raise the pending Cancelled instead (docs/explanation/measurements.md).
        await trio.lowlevel.checkpoint()
    return result.unwrap()
