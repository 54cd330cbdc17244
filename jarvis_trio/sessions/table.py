"""The sessions this process runs, and the one place that carries out their rules.

Every decision comes from a session's :class:`~jarvis_trio.rules.SessionRules`
(or from :func:`~jarvis_trio.sessions.runner.cut_short`, for how a stream ended);
:meth:`SessionTable.apply` carries the rules' actions out, and nothing else here
decides. A stream is *released* once it is over on both sides (its task has ended
and its reader is done, or it was cancelled); releasing tells the rules, which may
start the request that waited for it.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from jarvis_trio import logs
from jarvis_trio.admission import Admission
from jarvis_trio.generation import Backend
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.registry import Registry
from jarvis_trio.replay import RetainedLogs
from jarvis_trio.rules import (
    Action,
    Cancel,
    CancelReason,
    Joined,
    JoinTimedOut,
    Reject,
    SessionRules,
    Start,
)
from jarvis_trio.sessions.observer import Observer
from jarvis_trio.sessions.runner import run_stream
from jarvis_trio.sessions.session import Entry, Session, SessionKey
from jarvis_trio.sessions.watchers import cut_off_stuck_reader, expire_detached
from jarvis_trio.streams import Stream


class SessionTable:
    """Every session and stream the manager knows of; carries out the rules' actions."""

    def __init__(
        self,
        backend: Backend,
        observer: Observer,
        admission: Admission,
        *,
        join_budget: float,
        retained: RetainedLogs,
        registry: Registry | None,
    ) -> None:
        self.backend = backend
        self.observer = observer
        self.admission = admission
        self.join_budget = join_budget
        self.registry = registry
        # The logs of sessions that went idle, so a late viewer still sees the end.
        self.retained = retained
        self.sessions: dict[SessionKey, Session] = {}
        # Every stream the rules know of (waiting, live, dying, zombie), by id.
        self.entries: dict[str, Entry] = {}
        # Sessions by their registry digest, for cancel messages from other processes.
        self.by_digest: dict[str, Session] = {}
        self.nursery: trio.Nursery | None = None  # the manager's, while it runs

    # -- sessions

    def open(self, key: SessionKey, label: str | None) -> Session:
        assert self.nursery is not None
        self.retained.drop(key)
        session = Session(key=key, label=label, rules=SessionRules(self.join_budget))
        self.sessions[key] = session
        self.nursery.start_soon(self._session_main, session)
        return session

    def drop(self, session: Session) -> None:
        if self.sessions.get(session.key) is session:
            del self.sessions[session.key]
            if session.newest is not None:
                self.retained.keep(session.key, session.newest.log, trio.current_time())
        if session.digest is not None and self.by_digest.get(session.digest) is session:
            del self.by_digest[session.digest]
        session.closed.set()

    async def _session_main(self, session: Session) -> None:
        async with trio.open_nursery() as nursery:
            session.nursery = nursery
            deferred, session.deferred = session.deferred, []
            for entry in deferred[1:]:
                nursery.start_soon(self._run, session, entry)
            if deferred:
                # The stream that opened the session runs in the session's own task:
                # a task of its own started one scheduler pass later, on every new
                # session's (so every request without a session's) way upstream.
                await self._run(session, deferred[0])
            await session.closed.wait()

    # -- carrying out decisions

    def apply(
        self, session: Session, actions: list[Action], releasing: Stream | None = None
    ) -> None:
        """Carry out ``actions`` (``releasing``: the stream whose release returned them)."""
        released: list[Stream] = []
        for action in actions:
            if isinstance(action, Start):
                if action.after is not None and action.clean:
                    logs.event(
                        "prev_stream_finished_cleanly", session=session.label, trace=action.after
                    )
                self._start(session, session.entries[action.stream])
            elif isinstance(action, Cancel):
                logs.event("stream_cancelled", trace=action.stream, reason=action.reason.value)
                cancelled = session.entries[action.stream].stream
                cancelled.mark_cancelled(action.reason)
                if cancelled.producer_done:
                    # Generation was over, only its reader was still going: it has
                    # just been cut off, so the stream is released now.
                    released.append(cancelled)
            elif isinstance(action, Reject):
                logs.event(
                    "stream_cancelled",
                    trace=action.stream,
                    reason=action.reason.value,
                    started=False,
                )
                self.entries.pop(action.stream, None)
                session.entries.pop(action.stream).stream.reject(action.reason)
            elif isinstance(action, JoinTimedOut):
                self.observer.join_finished(clean=False, seconds=self.join_budget)
                logs.event(
                    "prev_stream_timeout_on_cancel",
                    level=logging.WARNING,
                    session=session.label,
                    trace=action.stream,
                )
            elif isinstance(action, Joined):
                assert releasing is not None and releasing.id == action.stream
                assert releasing.cancelled_at is not None
                self.observer.join_finished(
                    clean=True, seconds=trio.current_time() - releasing.cancelled_at
                )
        # After the loop: releasing is a transition of its own, never nested in another.
        for stream in released:
            self.release(session, stream)

    def cancel(self, session: Session, stream_id: str, reason: CancelReason) -> None:
        """Ask the rules to end one request early, and carry out what they say."""
        self.apply(session, session.rules.cancel(stream_id, reason, trio.current_time()))

    def release(self, session: Session, stream: Stream) -> None:
        """``stream`` is over on both sides: tell the rules, maybe start the next one."""
        entry = session.entries.pop(stream.id, None)
        if entry is None:
            return  # already released
        self.entries.pop(stream.id, None)
        if stream.started_at is not None:
            self.admission.ended()
        if entry.lease is not None:
            assert self.nursery is not None
            entry.lease.give_back(self.nursery)
        self.apply(session, session.rules.release(stream.id), releasing=stream)
        if session.rules.idle:
            self.drop(session)

    def detach(self, session: Session, stream: Stream) -> None:
        """The client left a resumable stream: it goes on for viewers, and is cancelled
        as a disconnect once it has had none for its grace period."""
        stream.detach()
        logs.event(
            "stream_detached",
            trace=stream.id,
            session=session.label,
            resume_seconds=stream.resume_seconds,
        )
        assert self.nursery is not None
        unwatched = partial(self.cancel, session, stream.id, CancelReason.DISCONNECTED)
        self.nursery.start_soon(expire_detached, stream, session.label, unwatched)

    # -- running a stream

    def _start(self, session: Session, entry: Entry) -> None:
        self.admission.started()
        self.observer.stream_started()
        stream = entry.stream
        stream.on_reader_done = partial(self.release, session)
        stream.on_first_token = self.observer.first_token
        stream.start()
        if session.nursery is None:
            session.deferred.append(entry)
        else:
            session.nursery.start_soon(self._run, session, entry)

    async def _run(self, session: Session, entry: Entry) -> None:
        stream = entry.stream
        logs.event(
            "stream_start",
            trace=stream.id,
            session=session.label,
            request=stream.request_id,
            worker=None if self.registry is None else self.registry.worker,
        )
        before = None if entry.lease is None else partial(self._take_lease, session, entry)
        ending: Ending | None = None
        try:
            ending = await run_stream(stream, self.backend, self.observer, before)
        finally:
            if ending is None:  # cancelled from outside: the server is going away
                ending = Ending.cancelled(stream.cancel_reason or CancelReason.SHUTDOWN)
            self._ended(session, stream, ending)

    async def _take_lease(self, session: Session, entry: Entry) -> None:
        lease = entry.lease
        assert lease is not None and session.nursery is not None
        superseded = partial(self.cancel, session, entry.stream.id, CancelReason.SUPERSEDED)
        if not await lease.take(self.join_budget, session.label):
            superseded()
            await trio.lowlevel.checkpoint()  # our scope is cancelled: ends here
            return
        session.nursery.start_soon(lease.keep, superseded)

    def _ended(self, session: Session, stream: Stream, ending: Ending) -> None:
        # Cut short while blocked on a client that reads nothing (runner.cut_short).
        stuck = ending.outcome is Outcome.DISCONNECTED and stream.cancel_reason is None
        stream.end(ending)
        assert stream.started_at is not None
        duration = trio.current_time() - stream.started_at
        self.observer.stream_ended(ending.outcome, duration)
        # A cancelled stream that ends past its budget with nobody watching the
        # deadline (no waiter, no Stop) is a timed-out join, not a clean one.
        self.apply(session, session.rules.deadline_passed(trio.current_time()))
        logs.event(
            "stream_end",
            trace=stream.id,
            session=session.label,
            duration_ms=round(duration * 1000, 1),
            outcome=ending.outcome.value,
            tokens=stream.tokens,
        )
        try:
            if stuck:
                # Cut its reader off too, through the rules as any disconnect (a join
                # of 0 s: its task is over), or the session would wait for it.
                self.cancel(session, stream.id, CancelReason.DISCONNECTED)
            elif stream.reader_done or stream.cancel_reason is not None:
                self.release(session, stream)
            else:
                # Released when its reader is done (Stream.on_reader_done); a reader
                # stuck on a client that reads nothing is cut off.
                assert session.nursery is not None
                gone = partial(self.cancel, session, stream.id, CancelReason.DISCONNECTED)
                session.nursery.start_soon(cut_off_stuck_reader, stream, gone)
        except Exception:
            # A bug here must cost one session, not the server (an exception would
            # climb through every nursery up to the lifespan's).
            logs.log.exception("session_cleanup_failed trace=%s", stream.id)
