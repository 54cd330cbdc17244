"""One request's stream: the backend writes into it, the HTTP edge reads from it.

A stream is created waiting, is started or rejected by its session, runs in
the session's nursery under its own cancel scope, and ends exactly once with
an :class:`Ending`.

Invariant: nothing the backend sends after the stream was cancelled reaches
the reader. The reader checks ``cancel_reason`` before each batch, and a
cancel wakes a reader that is blocked waiting for output, so a superseded
client gets its final chunk at once even if the backend is slow to die.

A stream is *released* (its session may start another) only when both sides
are done: the backend's task has ended, and the reader has taken everything
or was cancelled. A finished answer that its client is still reading keeps
the session busy, so its buffered output never overlaps the next stream's.

Everything the backend sends is also appended to the stream's
:class:`~jarvis_trio.replay.ReplayLog`, for viewers. A client that asked to be
resumable and leaves mid-answer *detaches* instead of cancelling: the channel
is closed, the backend goes on writing to the log alone, and the session
manager cancels the stream if no viewer attaches within its grace period.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import trio

from jarvis_trio import logs
from jarvis_trio.generation import GenerationRequest, Output, Usage
from jarvis_trio.outcomes import Ending
from jarvis_trio.replay import ReplayLog
from jarvis_trio.rules import CancelReason

# Chunks the backend may run ahead of the reader before ``send`` blocks.
CHANNEL_BUFFER = 64
# Put in the channel by ``mark_cancelled`` to wake a reader waiting on it. Never
# output: it is sent only once ``cancel_reason`` is set, and the reader checks that
# after every wait, before it keeps anything.
_WAKE = cast(Output, object())
# Subscripted once: ``open_memory_channel[Output]`` per stream goes through typing's cache.
_open_output_channel = trio.open_memory_channel[Output]


def new_stream_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """The bounds of one stream, from the server's settings (and the request's header)."""

    inactivity_seconds: float = 120.0
    first_token_seconds: float = 300.0
    replay_chars: int = 65536
    # How long a stream whose client left waits for a viewer (0: cancel at once).
    resume_seconds: float = 0.0


class Stream:
    """Implements the backend's :class:`~jarvis_trio.generation.Sink`."""

    def __init__(
        self,
        *,
        job: GenerationRequest,
        session_id: str | None,
        request_id: str,
        limits: StreamLimits,
    ) -> None:
        self.id = new_stream_id()
        self.job = job
        self.session_id = session_id
        self.request_id = request_id
        self.created = int(time.time())
        self.submitted_at = trio.current_time()
        self.scope = trio.CancelScope()
        self.inactivity_seconds = limits.inactivity_seconds
        self.first_token_seconds = limits.first_token_seconds
        # Set once, by the first cancel; later cancels do not change the story.
        self.cancel_reason: CancelReason | None = None
        self.ending: Ending | None = None
        self.tokens = 0
        # The model the upstream says is answering (None: the one asked for).
        self.answered_model: str | None = None
        self.started_at: float | None = None
        self.decided = trio.Event()  # started or rejected
        # The producer side is over: the task ended (or it never had one), the ending set.
        self.producer_ended = trio.Event()
        # The reader side is over: it took everything, was cut off, or left.
        self.reader_ended = trio.Event()
        self._ready = trio.Event()  # opened upstream, or ended: the reader may go on
        self._send, self._receive = _open_output_channel(CHANNEL_BUFFER)
        self._waiting_sender = trio.Lock()  # held by a send that waits for room
        # Set while a coalescing window is open: ends the window early (the end, a
        # cancel, or a half-full channel), so the reader is not woken per piece.
        self._flush: trio.Event | None = None
        self._on_cancel: list[Callable[[], None]] = []
        self.blocked_on_reader = False
        # When the reader last came back for more (after its previous write completed).
        self.last_read_at = trio.current_time()
        # Called (once) when the reader finishes after the producer did.
        self.on_reader_done: Callable[[Stream], None] | None = None
        self.on_first_token: Callable[[float], None] | None = None
        self.cancelled_at: float | None = None
        self.log = ReplayLog(
            self.id,
            job.model,
            self.created,
            limit_chars=limits.replay_chars,
            request_id=request_id,
        )
        # How long a stream whose client left waits for a viewer (0: cancel at once).
        self.resume_seconds = limits.resume_seconds
        # The client left and the stream goes on for viewers only (see ``detach``).
        self.detached = False

    @property
    def producer_done(self) -> bool:
        # Invariant: set once, by ``end``, after the ending; never cleared.
        return self.producer_ended.is_set()

    @property
    def reader_done(self) -> bool:
        # Invariant: set once, by ``_finish_reading``; nothing reaches a reader after it.
        return self.reader_ended.is_set()

    # -- Sink (backend side)

    def opened(self, model: str | None = None) -> None:
        if model and self.answered_model is None:
            self.answered_model = self.log.model = model
        self._ready.set()

    async def send(self, text: Output) -> None:
        """Hand ``text`` to the reader and the log, in one order for both.

        Invariant: the log holds the pieces in the order the reader gets them (a viewer
        resuming at ``<id>:<n>`` counts on it), with several senders too (an agent's
        parallel tool calls). A piece that finds room is logged in the step that puts
        it in the channel. A send that must wait for room holds ``_waiting_sender``
        until its piece is logged (the reader may have it a pass earlier: trio moves it
        into the buffer when the reader takes one): later sends queue behind it, and
        ``offer`` refuses, instead of overtaking it. While senders keep the buffer
        full they take turns on the lock.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._waiting_sender.locked() or not self._put_nowait(text):
            async with self._waiting_sender:
                if not self._put_nowait(text):
                    await self._wait_for_room(text)
            return
        await trio.lowlevel.cancel_shielded_checkpoint()

    def offer(self, text: Output) -> bool:
        """``send`` without a wait, for a relay's callback (``DirectSink``)."""
        # Refused: cancelled (a cancel_reason cancels the scope), detached, or a send
        # waits for room (this piece goes after it).
        if self.scope.cancel_called or self.detached or self._waiting_sender.locked():
            return False
        try:
            return self._put_nowait(text)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # no reader

    def _put_nowait(self, text: Output) -> bool:
        """Into the channel (not for a detached stream) and the log, in one step;
        False when the channel is full."""
        if not self.detached:
            try:
                self._send.send_nowait(text)
            except trio.WouldBlock:
                return False
            if self._flush is not None and self._half_full():
                self._end_window()  # the model outruns the window
        self._delivered(text)
        return True

    def _half_full(self) -> bool:
        return self._send.statistics().current_buffer_used >= CHANNEL_BUFFER // 2

    def _end_window(self) -> None:
        """A reader in a coalescing window takes what is there now."""
        if self._flush is not None:
            self._flush.set()

    async def _wait_for_room(self, text: Output) -> None:
        # The buffer is full: the client is slow, not the model. If the inactivity
        # deadline fires now, the stream ends as a client that stopped reading (the
        # flag stays set when ``send`` is cancelled).
        self.blocked_on_reader = True
        try:
            await self._send.send(text)
        except trio.BrokenResourceError:
            if not self.detached:
                raise
            # The reader detached while we waited for room: the log still gets it.
        self.blocked_on_reader = False
        self._delivered(text)

    def _delivered(self, text: Output) -> None:
        self.log.append(text)
        if isinstance(text, str) or text.content or text.fields:
            self.tokens += 1  # the model's output; an agent's progress chunk is not
        now = trio.current_time()
        self.scope.deadline = now + self.inactivity_seconds  # as touch(), clock read once
        if self.tokens == 1 and self.on_first_token is not None and self.started_at is not None:
            self.on_first_token(now - self.started_at)

    # -- session side

    def start(self) -> None:
        self.started_at = trio.current_time()
        # Until the first token, the (longer) first-token timeout applies; every
        # token then moves the deadline to now + the inactivity timeout.
        self.scope.deadline = self.started_at + self.first_token_seconds
        self.decided.set()

    def call_on_cancel(self, callback: Callable[[], None]) -> Callable[[], None]:
        """``callback`` runs in :meth:`mark_cancelled` (at once if that has run)."""
        if self.cancel_reason is not None:
            callback()
            return _nothing
        self._on_cancel.append(callback)
        return partial(_remove, self._on_cancel, callback)

    def mark_cancelled(self, reason: CancelReason) -> None:
        if self.cancel_reason is None:
            self.cancel_reason = reason
            self.cancelled_at = trio.current_time()
        self.scope.cancel(reason=reason.value)
        self._ready.set()
        self._end_window()
        # Wake a reader waiting on the (empty) channel in batches() (one in a coalescing
        # window waits on ``_flush``). A full channel has no reader waiting, and the
        # reader checks ``cancel_reason`` before it waits again. (A cancel scope around
        # every wait did the same for 7 % more instructions per token at one stream.)
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self._send.send_nowait(_WAKE)
        # A reader thread's token: its upstream socket is shut down now, not one
        # scheduler pass later when the task that watches for the cancel runs.
        callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            try:
                callback()
            except Exception:  # the cancel itself is done; one callback must not undo it
                logs.log.exception("cancel_callback_failed")

    def reject(self, reason: CancelReason) -> None:
        """End a request that never started."""
        self.mark_cancelled(reason)
        self.decided.set()
        self.end(Ending.cancelled(reason))

    def end(self, ending: Ending) -> None:
        # Set the ending before closing the channel: a reader woken by the
        # close must never see a stale (missing) ending.
        if self.ending is None:
            self.ending = ending
        self.log.end(self.ending)
        self.producer_ended.set()
        self._send.close()
        self._ready.set()
        self._end_window()  # the last pieces go out now, not at the window's end

    # -- reader side (HTTP edge)

    async def wait_ready(self) -> None:
        await self._ready.wait()

    def has_output(self) -> bool:
        """Something waits in the channel: the next batch needs no wait for the backend."""
        return self._receive.statistics().current_buffer_used > 0

    async def batches(self, coalesce: float = 0.0) -> AsyncGenerator[list[Output], None]:
        """Output in batches of what is already buffered; stops at the end or a cancel.

        ``coalesce`` > 0: after the first batch, a batch also gathers what arrives
        within ``coalesce`` seconds of its first piece (fewer, larger writes for the
        reader, each piece up to ``coalesce`` later). The first batch never waits.
        """
        first_batch = True
        try:
            while self.cancel_reason is None:
                self.last_read_at = trio.current_time()
                try:
                    first = await self._receive.receive()
                except trio.EndOfChannel:
                    return
                if self.cancel_reason is not None:
                    return  # ``first`` may be mark_cancelled's wake-up: never output
                batch = [first]
                if coalesce > 0 and not first_batch:
                    await self._gather(batch, trio.current_time() + coalesce)
                    if self.cancel_reason is not None:
                        return
                else:
                    self._take_buffered(batch)
                first_batch = False
                yield batch
        finally:
            self._finish_reading()

    async def _gather(self, batch: list[Output], deadline: float) -> None:
        """Add to ``batch`` what arrives until ``deadline``, the end, a cancel (the
        caller drops the batch), or a half-full channel.

        The reader sleeps through the window and takes what came at its end: woken
        once per batch, not once per piece (a ``receive`` loop saved the writes but
        not the reader's wake-ups; docs/benchmarks.md).
        """
        if not (self.cancel_reason or self.producer_ended.is_set() or self._half_full()):
            self._flush = trio.Event()
            try:
                with trio.move_on_at(deadline):
                    await self._flush.wait()
            finally:
                self._flush = None
        self._take_buffered(batch)

    def _take_buffered(self, batch: list[Output]) -> None:
        """Add to ``batch`` everything the channel holds now, without waiting."""
        while True:
            try:
                batch.append(self._receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                return

    async def collect_output(self) -> tuple[list[Output], Ending]:
        """Read the whole answer, piece by piece (the non-streaming path)."""
        await self.wait_ready()
        parts: list[Output] = []
        async for batch in self.batches():
            parts.extend(batch)
        return parts, self.final_ending()

    async def collect(self) -> tuple[str, Ending]:
        """Read the whole answer's text."""
        parts, ending = await self.collect_output()
        return "".join(p if isinstance(p, str) else p.content for p in parts), ending

    def final_ending(self) -> Ending:
        """How the reader should end, once :meth:`batches` is exhausted."""
        if self.cancel_reason is not None:
            return Ending.cancelled(self.cancel_reason, self.partial_usage())
        assert self.ending is not None, "batches() ended before the stream did"
        return self.ending

    # -- deadlines an agent run moves (jarvis_trio.agent.Deadlines)

    def touch(self) -> None:
        """Output is being made: the inactivity timeout starts again."""
        self.scope.deadline = trio.current_time() + self.inactivity_seconds

    def expect_first_token(self) -> None:
        """Another model call: it may take the first-token timeout before it speaks."""
        self.scope.deadline = trio.current_time() + self.first_token_seconds

    def allow(self, seconds: float) -> None:
        """Quiet on purpose (tool calls) for up to ``seconds``: no inactivity timeout."""
        self.scope.deadline = max(self.scope.deadline, trio.current_time() + seconds)

    @property
    def cancel_label(self) -> str | None:
        """Why the stream was cancelled (``superseded``...), for logs; None while live."""
        return None if self.cancel_reason is None else self.cancel_reason.value

    def partial_usage(self) -> Usage:
        """What a stream cut short produced: the pieces sent, as completion tokens."""
        return Usage(prompt_tokens=0, completion_tokens=self.tokens)

    def detach(self) -> None:
        """The client left, but may come back as a viewer: stop feeding the channel
        (what it held is in the log already) and let the backend go on."""
        self.detached = True
        self.close_reader()

    def close_reader(self) -> None:
        self._receive.close()
        self._finish_reading()

    def _finish_reading(self) -> None:
        if self.reader_done:
            return
        self.reader_ended.set()
        if self.producer_done and self.on_reader_done is not None:
            self.on_reader_done(self)


def _nothing() -> None:
    pass


def _remove(callbacks: list[Callable[[], None]], callback: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):  # already run and dropped by mark_cancelled
        callbacks.remove(callback)
