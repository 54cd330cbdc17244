"""Pieces of an answer from a worker thread to a trio :class:`~jarvis_trio.generation.Sink`.

Theory of operation
-------------------
``trio.from_thread.run(sink.send, piece)`` per piece costs a system task, two
thread switches and a reply: about 150 µs of CPU a piece (measured:
docs/explanation/measurements.md), the largest cost of relaying a token after
the client's socket write. So the
worker thread does not call into trio per piece. It appends to a short list
under a lock and, only when the list was empty, schedules one wake-up of the
*pump* with ``run_sync_soon`` (fire-and-forget, about 30 µs). The pump is a
trio task beside the worker (:func:`relay_from_worker`); it takes everything
pending and awaits ``sink.send`` for each piece, in order.

A wake-up of an idle pump first tries to deliver the pending pieces itself,
in the ``run_sync_soon`` callback, through the sink's ``offer``
(:class:`~jarvis_trio.generation.DirectSink`: a stream whose buffer has room
and which is not cancelled). Only what the sink refuses wakes the pump task.
The pump task's wake-up and its checkpoint were a tenth of the instructions
per relayed token at one stream (docs/benchmarks.md). The callback runs only
while the pump waits with nothing in hand, so pieces still reach the sink in
order.

Backpressure still reaches the thread: a slow client holds ``sink.send``, the
pump stops taking, the list fills up to ``RELAY_LIMIT``, and the thread waits
for room. That wait ends at once when the stream is cancelled (the relay's
callback on the thread's :class:`~jarvis_trio.threads.CancelToken`).

The upstream's answer opening (:meth:`PieceRelay.opened`: the sink's ``opened``,
which lets the response headers go out) takes the same way, ahead of the pieces
put after it: the thread does not wait for it. A ``from_thread.run_sync`` there
held the thread for a round trip to trio (a wake-up of the task that started
it and one of the thread) between the upstream's first line and its first
piece, on every stream's time to first token.

Invariant: pieces reach the sink in the order they were put, each once; after
a cancel, none (the pump is cancelled with the stream, and what it had not
sent yet is dropped, as a cancelled ``from_thread.run`` would have). A callback
can run in the scheduler pass between a cancel and the pump task seeing it, so
``offer`` must refuse once its sink is cancelled; a stream does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeGuard, TypeVar

import outcome
import trio

from jarvis_trio.generation import DirectSink
from jarvis_trio.threads import CancelToken, WorkerCancelled, raise_plain_cancelled

if TYPE_CHECKING:  # backends import this module
    from jarvis_trio.generation import Output, Sink

T = TypeVar("T")


_DIRECT_TYPES: dict[type, bool] = {}


def _is_direct(sink: Sink) -> TypeGuard[DirectSink]:
    """``isinstance(sink, DirectSink)``, asked once per class: a protocol check walks
    the protocol's members every time (Python 3.11)."""
    kind = type(sink)
    known = _DIRECT_TYPES.get(kind)
    if known is None:
        known = _DIRECT_TYPES[kind] = isinstance(sink, DirectSink)
    return known


class _Opened:
    """In the pending list: call the sink's ``opened`` (with ``model``) here, in order."""

    __slots__ = ("model",)

    def __init__(self, model: str | None) -> None:
        self.model = model


# Pieces the thread may run ahead of the pump (the stream buffers more behind it).
RELAY_LIMIT = 16


class PieceRelay:
    def __init__(self, *, limit: int = RELAY_LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        # Invariant (under the lock): the pump has been woken since the list last
        # became non-empty, or it is about to look at the list anyway.
        self._pending: list[Output | _Opened] = []
        self._closed = False
        self._cancelled = False
        self._trio_token = trio.lowlevel.current_trio_token()
        self._wake = trio.Event()  # trio side only
        self._direct: DirectSink | None = None  # the sink, if it takes pieces at once
        self._pump_idle = False  # the pump waits for a wake-up, with nothing in hand

    # -- worker thread side

    def attach(self, token: CancelToken) -> None:
        """Let a cancel free a thread that waits for room."""
        token.add_callback(self._cancel)

    def opened(self, model: str | None) -> None:
        """The upstream answered: the sink's ``opened(model)`` runs on the trio side
        before any piece put after this call. Does not wait for it."""
        self._append(_Opened(model))

    def put(self, text: Output) -> None:
        """Hand one piece to the pump; waits while ``limit`` pieces are pending."""
        self._append(text)

    def _append(self, item: Output | _Opened) -> None:
        with self._lock:
            while len(self._pending) >= self._limit and not self._cancelled:
                self._room.wait()
            if self._cancelled:
                raise WorkerCancelled
            wake = not self._pending
            self._pending.append(item)
        if wake:
            self._trio_token.run_sync_soon(self._wake_pump)

    def close(self) -> None:
        """No more pieces: the pump ends once it has sent what is pending."""
        with self._lock:
            self._closed = True
        self._trio_token.run_sync_soon(self._wake_pump)

    def _cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            self._room.notify_all()

    # -- trio side

    def _wake_pump(self) -> None:
        if self._pump_idle and self._direct is not None:
            with self._lock:
                taken = 0
                try:
                    for item in self._pending:
                        if isinstance(item, _Opened):
                            self._direct.opened(item.model)
                        elif not self._direct.offer(item):
                            break
                        taken += 1
                except Exception:
                    # Raised in a run_sync_soon callback, it would end the whole trio
                    # run: the pump task takes the rest, and meets the error there,
                    # where it ends this stream only.
                    pass
                if taken:
                    del self._pending[:taken]
                    self._room.notify_all()
                if not self._pending and not self._closed:
                    return  # all delivered: the pump sleeps on
        self._wake.set()

    async def pump(self, sink: Sink, token: CancelToken) -> None:
        """Send every piece to ``sink`` as it comes, until the thread closes the relay.

        Cancelled, or failed (the sink raised): fires ``token`` first, so the thread
        stops too (it may be waiting for room, or reading more).
        """
        try:
            await self._pump(sink)
        except BaseException:
            token.fire()
            raise

    async def _pump(self, sink: Sink) -> None:
        self._direct = sink if _is_direct(sink) else None
        while True:
            with self._lock:
                pieces, self._pending = self._pending, []
                closed = self._closed
                if pieces:
                    self._room.notify_all()
            if pieces:
                for item in pieces:
                    if isinstance(item, _Opened):
                        sink.opened(item.model)
                    else:
                        await sink.send(item)
                continue
            if closed:
                return
            # No checkpoint between the check above and this wait: a wake-up
            # scheduled by a put that follows the check sets this very event.
            self._wake = trio.Event()
            self._pump_idle = True
            try:
                await self._wake.wait()
            finally:
                self._pump_idle = False  # woken, or cancelled: no more direct delivery


async def relay_from_worker(
    fn: Callable[[CancelToken, PieceRelay], T],
    sink: Sink,
    *,
    limiter: trio.CapacityLimiter | None = None,
) -> T:
    """Run ``fn(token, relay)`` in a worker thread while a pump task sends what it puts
    to ``sink``. Returns once every piece was sent (or raises what ``fn`` raised, after
    the pieces it put before).

    As :func:`~jarvis_trio.threads.run_in_worker`, with the pump as the watcher that
    fires the token: the pump is cancelled with the caller, and it also ends early
    when the sink fails; either way it fires the token on its way out. (A watcher
    task of its own, its nursery and the cancel that ended it were 2.7 % of the
    gateway's instructions per streamed request.)
    """
    relay = PieceRelay()
    token = CancelToken()
    relay.attach(token)

    def in_thread() -> T:
        try:
            return fn(token, relay)
        finally:
            try:
                relay.close()
            finally:
                token.finish()  # even when the trio run is over (close raises then)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay.pump, sink, token)
            # The stream's cancel fires the token in the cancelling call itself, a
            # scheduler pass before the pump sees it; taken back when the thread is done.
            forget = sink.call_on_cancel(token.fire) if _is_direct(sink) else None
            try:
                result = await trio.to_thread.run_sync(outcome.capture, in_thread, limiter=limiter)
            finally:
                if forget is not None:
                    forget()  # a later cancel must not reach this token's connection
            if token.cancelled:
                # The pump ended early (cancelled, or its sink failed): whatever the
                # thread raised after the token fired is a consequence of that.
                await trio.lowlevel.checkpoint()  # raises the pending Cancelled
    except BaseExceptionGroup as group:
        # As in run_in_worker: callers must see a plain Cancelled, not a group of them,
        # and a plain error from the pump (the sink), as from_thread.run would give.
        await raise_plain_cancelled(group)
        rest = group.split(trio.Cancelled)[1]
        if rest is not None and len(rest.exceptions) == 1:
            only = rest.exceptions[0]
            if isinstance(only, Exception) and not isinstance(only, BaseExceptionGroup):
                raise only from None
        raise
    return result.unwrap()
