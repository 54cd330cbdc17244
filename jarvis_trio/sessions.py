"""The trio glue: sessions own nurseries, streams run in them, the rules decide.

Theory of operation
-------------------
The :class:`SessionManager` runs one nursery for the whole server. Each
session gets a task in it that owns the session's own nursery, and every
stream of that session runs there under its own cancel scope. All decisions
(start, wait, cancel, reject, give up on a join) come from the session's
:class:`~jarvis_trio.rules.SessionRules`; this module only carries them out,
in :meth:`SessionManager._apply`.

There is one cancellation path. Supersede, Stop, client disconnect and
shutdown all end in ``Stream.mark_cancelled``, which cancels the stream's
scope; the inactivity timeout is the same scope's deadline. From there trio
delivers ``Cancelled`` to the backend, whose worker thread sees its token
fire. The stream's task then reports to the rules, which may start the
request that was waiting for it.

Admission (:meth:`SessionManager.submit`) is synchronous, so the order in
which requests reach the rules is the order in which they arrived: latest
wins without locks. Before a request touches its session, the gateway's
:class:`~jarvis_trio.admission.Admission` may refuse it (429 when every slot
is taken, 503 while shutting down); a request of a session that already runs
a stream is never refused for the slot its predecessor holds.

Viewers (:meth:`SessionManager.watch`) read the replay log of a session's
newest stream and are invisible to the rules. A stream whose client asked to
be resumable and then left is *detached*, not cancelled: it goes on for
viewers, and is cancelled like any disconnect once it has had no viewer for
its grace period (:meth:`SessionManager._expire_detached`).

Across processes (a :class:`~jarvis_trio.registry.Registry` is configured), a
request with a session id comes with a :class:`~jarvis_trio.registry.Claim`:
its generation. The local rules still decide first; a started stream then takes
the session's lease (waiting, within the same join budget counted from its
claim, for another process's stream to finish) before it reaches the model,
renews it while it runs and releases it when it is over. A cancel message from
a newer generation, or a renewal that finds one, cancels the stream through the
rules like any supersede (:meth:`SessionManager._on_registry_cancel`).
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol

import trio

from jarvis_trio import logs
from jarvis_trio.admission import Admission, Refusal, Refuse
from jarvis_trio.errors import (
    ApiError,
    RegistryUnavailable,
    ServerError,
    ServiceUnavailable,
    TooManyRequests,
    UpstreamTimeout,
)
from jarvis_trio.generation import Backend, GenerationRequest
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.registry import Claim, Registry
from jarvis_trio.registry.fencing import (
    Message,
    MessageKind,
    TakeResult,
    must_end,
    renew_interval,
)
from jarvis_trio.replay import ReplayLog, RetainedLogs
from jarvis_trio.rules import (
    Action,
    Cancel,
    CancelReason,
    Joined,
    JoinTimedOut,
    Reject,
    SessionRules,
    Start,
    StreamState,
)
from jarvis_trio.streams import Stream

# (owner, session id). Requests without a session id get a key of their own.
SessionKey = tuple[str, str]


@dataclass(eq=False)
class Session:
    key: SessionKey
    label: str | None  # the client's X-Session-Id, for logs
    rules: SessionRules
    streams: dict[str, Stream] = field(default_factory=dict)
    nursery: trio.Nursery | None = None
    # Streams started before the session's nursery was open.
    deferred: list[Stream] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)
    # The session's latest request, whose log viewers read (None without a session id).
    newest: Stream | None = None
    # With a registry: the session's digest, and the newest generation seen here.
    digest: str | None = None
    newest_generation: int = 0


@dataclass(frozen=True, slots=True)
class StopReport:
    """What Stop did. ``result``: ``finished_cleanly``, ``join_timeout`` or ``nothing_live``."""

    result: str
    stream_id: str | None = None
    waited_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """One entry of ``GET /v1/requests``."""

    id: str
    session_id: str | None
    request_id: str
    model: str
    state: str  # waiting, live, cancelling, zombie
    age_seconds: float
    tokens: int


@dataclass(frozen=True, slots=True)
class ManagerStatistics:
    sessions: int
    live_streams: int
    streams_started: int
    cancels_issued: int
    joins_clean: int
    joins_timed_out: int
    # Admission: streams holding a slot (live, cancelling, zombie), the bound, requests
    # waiting for their session's previous stream, and refusals by reason.
    running_streams: int = 0
    max_streams: int = 0
    waiting_streams: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class Observer(Protocol):
    """What the manager reports as it goes (metrics implement it; the default ignores it)."""

    def stream_started(self) -> None: ...

    def stream_ended(self, outcome: Outcome, seconds: float) -> None: ...

    def join_finished(self, clean: bool, seconds: float) -> None:
        """A cancelled stream's task ended within its budget (``clean``) or ran past it."""

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


@dataclass
class _Counters:
    started: int = 0
    cancels: int = 0
    joins_clean: int = 0
    joins_timed_out: int = 0


class SessionManager:
    def __init__(
        self,
        backend: Backend,
        *,
        join_budget: float = 2.0,
        inactivity_seconds: float = 120.0,
        first_token_seconds: float = 300.0,
        replay_chars: int = 65536,
        replay_retention: float = 300.0,
        replay_retained: int = 256,
        observer: Observer | None = None,
        registry: Registry | None = None,
        max_streams: int | None = None,
        retry_after: float = 1.0,
    ) -> None:
        self.backend = backend
        # Who may open a stream (None: no bound but the thread limiter's).
        self._admission = Admission(max_streams or sys.maxsize, retry_after)
        # None: sessions are this process's alone (the default, in-memory registry).
        self.registry = registry
        self.observer: Observer = observer or NullObserver()
        self.join_budget = join_budget
        self.inactivity_seconds = inactivity_seconds
        self.first_token_seconds = first_token_seconds
        self.replay_chars = replay_chars
        # The logs of sessions that went idle, so a late viewer still sees the end.
        self._retained = RetainedLogs(retention=replay_retention, capacity=replay_retained)
        self._sessions: dict[SessionKey, Session] = {}
        # Every stream the rules know of (waiting, live, dying, zombie), by id.
        self._by_id: dict[str, Session] = {}
        # Sessions by their registry digest, for cancel messages from other processes.
        self._by_digest: dict[str, Session] = {}
        self._nursery: trio.Nursery | None = None
        self._closing = False
        self._stopped = trio.Event()
        self._counters = _Counters()

    # -- lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown` (or until cancelled)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.registry is not None:
                    await nursery.start(self.registry.serve, self._on_registry_cancel)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._closing = True  # also when cancelled from outside: refuse new work
            self._admission.close()
            self._stopped.set()

    async def shutdown(self) -> None:
        """Cancel every stream (reason ``shutdown``), join them, then stop.

        Streams get the join budget to end cleanly; whatever is left is then
        cancelled hard, and its threads get until the caller's deadline (wrap the
        call in ``move_on_after``; without one, one more budget) to return before
        the caller closes the backend.
        """
        if self._nursery is None or self._stopped.is_set():
            return
        if self._closing:  # a second call (serve's trigger, then the app's lifespan)
            with trio.move_on_after(self.join_budget):
                await self._stopped.wait()
            return
        self._closing = True
        self._admission.close()
        now = trio.current_time()
        end = min(trio.current_effective_deadline(), now + 2 * self.join_budget)
        for session in list(self._sessions.values()):
            actions, _ = session.rules.cancel_all(CancelReason.SHUTDOWN, now)
            self._apply(session, actions)
        try:
            with trio.move_on_at(min(end, now + self.join_budget)):
                for session in list(self._sessions.values()):
                    await session.closed.wait()
        finally:
            self._nursery.cancel_scope.cancel(reason="shutdown")
        with trio.move_on_at(end):
            await self._stopped.wait()

    # -- requests

    def check_accepting(self, owner: str | None = None, session_id: str | None = None) -> None:
        """Raise what a new request of ``(owner, session_id)`` would get now: a 503 while
        the server shuts down, a 429 while every stream slot is taken (unless its
        session runs a stream: the new one takes over that stream's slot)."""
        running = session_id is not None and (owner or "", session_id) in self._sessions
        self._admit(running)

    def _admit(self, session_running: bool) -> None:
        if self._nursery is None:
            self._admission.close()
        verdict = self._admission.arrive(session_running=session_running)
        if not isinstance(verdict, Refuse):
            return
        admission = self._admission
        logs.event(
            "stream_refused",
            reason=verdict.reason.value,
            running=admission.running,
            limit=admission.limit,
        )
        self.observer.stream_refused(verdict.reason.value)
        if verdict.reason is Refusal.SHUTTING_DOWN:
            raise ServiceUnavailable(
                "The server is shutting down.",
                code="shutting_down",
                retry_after=verdict.retry_after,
            )
        raise TooManyRequests(
            f"The gateway is full ({admission.running} of {admission.limit} streams "
            f"running). Try again in {verdict.retry_after:g} s.",
            code="gateway_full",
            retry_after=verdict.retry_after,
        )

    def submit(
        self,
        owner: str,
        session_id: str | None,
        job: GenerationRequest,
        request_id: str,
        *,
        resume_seconds: float = 0.0,
        claim: Claim | None = None,
    ) -> Stream:
        """Admit a request: it starts now, or waits for its session's previous stream.

        ``resume_seconds``: if the client leaves mid-answer, the stream goes on that
        long waiting for a viewer (a refreshed page) instead of being cancelled.
        ``claim``: its place in the session across processes (with a registry).
        Raises the 429 or 503 of :meth:`check_accepting` before anything is touched.
        """
        key: SessionKey | None = None if session_id is None else (owner, session_id)
        self._admit(key is not None and key in self._sessions)
        stream = Stream(
            job=job,
            session_id=session_id,
            request_id=request_id,
            inactivity_seconds=self.inactivity_seconds,
            first_token_seconds=self.first_token_seconds,
            replay_chars=self.replay_chars,
            resume_seconds=resume_seconds,
        )
        # A request without a session gets a key no client can name (NUL is not
        # allowed in X-Session-Id).
        key = (owner, session_id if session_id is not None else "\0" + stream.id)
        stream.session_key = key
        stream.claim = claim
        session = self._sessions.get(key) or self._open_session(key, session_id)
        if claim is not None:
            if claim.generation < session.newest_generation:
                # A newer request of the session was claimed (here or elsewhere) while
                # this one's claim was on its way: latest wins, this one never starts.
                logs.event("stream_cancelled", trace=stream.id, reason="superseded", started=False)
                stream.reject(CancelReason.SUPERSEDED)
                if session.rules.idle and not session.streams:
                    self._drop_session(session)
                return stream
            session.newest_generation = claim.generation
            session.digest = claim.session
            self._by_digest[claim.session] = session
        session.streams[stream.id] = stream
        if session_id is not None:
            session.newest = stream
        self._by_id[stream.id] = session
        actions, stream.wait = session.rules.submit(stream.id, trio.current_time())
        self._apply(session, actions)
        return stream

    async def wait_turn(self, stream: Stream) -> None:
        """Wait until ``stream`` was started or rejected, within its join budget."""
        if stream.decided.is_set():
            return
        assert stream.wait is not None
        with trio.move_on_at(stream.wait.deadline):
            await stream.decided.wait()
        if not stream.decided.is_set():
            session = self._sessions[stream.session_key]
            self._apply(session, session.rules.deadline_passed(trio.current_time()))
        assert stream.decided.is_set()

    def abandon(self, stream: Stream) -> None:
        """The HTTP exchange that owns ``stream`` is over: cancel it if it still runs
        (or, for a resumable stream that has started, detach it for viewers)."""
        session = self._sessions.get(stream.session_key)
        if session is not None and stream.id in session.streams and not stream.producer_done:
            resumable = stream.resume_seconds > 0 and stream.started_at is not None
            if resumable and stream.cancel_reason is None and not stream.detached:
                self._detach(session, stream)
                return
            self._cancel(session, stream.id, CancelReason.DISCONNECTED)
        stream.close_reader()  # releases a finished stream whose reader had not ended

    def watch(self, owner: str, session_id: str) -> ReplayLog | None:
        """The log of the session's newest stream (live, or recently finished), if any."""
        session = self._sessions.get((owner, session_id))
        if session is not None and session.newest is not None:
            return session.newest.log
        return self._retained.get((owner, session_id), trio.current_time())

    def _detach(self, session: Session, stream: Stream) -> None:
        stream.detach()
        logs.event(
            "stream_detached",
            trace=stream.id,
            session=session.label,
            resume_seconds=stream.resume_seconds,
        )
        assert self._nursery is not None
        self._nursery.start_soon(self._expire_detached, session, stream)

    async def _expire_detached(self, session: Session, stream: Stream) -> None:
        """Cancel a detached stream (as a disconnect) once it has gone ``resume_seconds``
        without a viewer. Ends when the stream does."""
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
                logs.event("stream_unwatched", trace=stream.id, session=session.label)
                self._cancel(session, stream.id, CancelReason.DISCONNECTED)
                return
            with trio.move_on_at(deadline):
                await changed.wait()

    async def stop(self, owner: str, session_id: str) -> StopReport:
        """The Stop button: cancel the session's stream and join it within the budget.

        With a registry the Stop reaches the stream wherever it runs: it claims a
        generation of its own (which stops older streams everywhere) and, when no
        stream of the session runs here, waits for the lease's holder to give it back.
        """
        if self.registry is None:
            return await self._stop_here(owner, session_id)
        started = trio.current_time()
        claim = await self.registry.claim(owner, session_id, stop=True)
        report = await self._stop_here(owner, session_id)
        if report.result != "nothing_live":
            return report
        result = await self.registry.wait_stopped(claim, claim.claimed_at + self.join_budget)
        return StopReport(result, None, (trio.current_time() - started) * 1000)

    async def _stop_here(self, owner: str, session_id: str) -> StopReport:
        session = self._sessions.get((owner, session_id))
        if session is None:
            return StopReport("nothing_live")
        actions, wait = session.rules.cancel_all(CancelReason.STOPPED, trio.current_time())
        # Take the stream to join before the actions run: applying them may release it.
        target = session.streams.get(wait.joining) if wait is not None else None
        self._apply(session, actions)
        if wait is None or target is None:
            return StopReport("nothing_live")
        return await self._join(session, target, wait.deadline)

    async def cancel_request(self, owner: str, stream_id: str) -> StopReport:
        """Cancel one request by its stream id; Stop's semantics (answers after the join)."""
        session = self._by_id.get(stream_id)
        if session is None or session.key[0] != owner:
            return StopReport("nothing_live")
        rules, target = session.rules, session.streams[stream_id]
        state = rules.state_of(stream_id)
        if state is StreamState.ZOMBIE:
            return StopReport("join_timeout", stream_id)
        self._cancel(session, stream_id, CancelReason.STOPPED)
        if state is StreamState.WAITING:
            return StopReport("never_started", stream_id)
        deadline = rules.deadline if rules.dying == stream_id else trio.current_time()
        return await self._join(session, target, deadline)

    def requests_of(self, owner: str) -> list[RequestInfo]:
        """The owner's streams that are waiting, live, being cancelled or past their join."""
        now = trio.current_time()
        out = []
        for stream_id, session in self._by_id.items():
            if session.key[0] != owner:
                continue
            stream, state = session.streams[stream_id], session.rules.state_of(stream_id)
            if state is None:
                continue
            out.append(
                RequestInfo(
                    id=stream_id,
                    session_id=stream.session_id,
                    request_id=stream.request_id,
                    model=stream.job.model,
                    state=state.value,
                    age_seconds=now - stream.submitted_at,
                    tokens=stream.tokens,
                )
            )
        return out

    async def _join(self, session: Session, target: Stream, deadline: float) -> StopReport:
        started = trio.current_time()
        with trio.move_on_at(deadline):
            await target.finished.wait()
        waited_ms = (trio.current_time() - started) * 1000
        if target.finished.is_set():
            logs.event("prev_stream_finished_cleanly", session=session.label, trace=target.id)
            return StopReport("finished_cleanly", target.id, waited_ms)
        self._apply(session, session.rules.deadline_passed(trio.current_time()))
        return StopReport("join_timeout", target.id, waited_ms)

    @property
    def stopped(self) -> bool:
        """Every stream task (and so every worker thread it waited for) has ended."""
        return self._stopped.is_set()

    def statistics(self) -> ManagerStatistics:
        c = self._counters
        return ManagerStatistics(
            sessions=len(self._sessions),
            live_streams=sum(s.rules.live is not None for s in self._sessions.values()),
            streams_started=c.started,
            cancels_issued=c.cancels,
            joins_clean=c.joins_clean,
            joins_timed_out=c.joins_timed_out,
            running_streams=self._admission.running,
            max_streams=min(self._admission.limit, 2**31 - 1),
            waiting_streams=sum(s.rules.waiter is not None for s in self._sessions.values()),
            refused={r.value: n for r, n in self._admission.refused.items()},
        )

    # -- carrying out decisions

    def _apply(
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
                self._start(session, session.streams[action.stream])
            elif isinstance(action, Cancel):
                self._counters.cancels += 1
                logs.event("stream_cancelled", trace=action.stream, reason=action.reason.value)
                cancelled = session.streams[action.stream]
                cancelled.mark_cancelled(action.reason)
                if cancelled.producer_done:
                    # Generation was over, only its reader was still going: it has
                    # just been cut off, so the stream is released now (a join of 0 s).
                    released.append(cancelled)
            elif isinstance(action, Reject):
                logs.event(
                    "stream_cancelled",
                    trace=action.stream,
                    reason=action.reason.value,
                    started=False,
                )
                self._by_id.pop(action.stream, None)
                session.streams.pop(action.stream).reject(action.reason)
            elif isinstance(action, JoinTimedOut):
                self._counters.joins_timed_out += 1
                self.observer.join_finished(clean=False, seconds=self.join_budget)
                logs.event(
                    "prev_stream_timeout_on_cancel",
                    level=logging.WARNING,
                    session=session.label,
                    trace=action.stream,
                )
            elif isinstance(action, Joined):
                assert releasing is not None and releasing.cancelled_at is not None
                self._counters.joins_clean += 1
                self.observer.join_finished(
                    clean=True, seconds=trio.current_time() - releasing.cancelled_at
                )
        # After the loop: releasing is a transition of its own, never nested in another.
        for stream in released:
            self._finished(session, stream)

    def _cancel(self, session: Session, stream_id: str, reason: CancelReason) -> None:
        """Ask the rules to end one request early, and carry out what they say."""
        self._apply(session, session.rules.cancel(stream_id, reason, trio.current_time()))

    def _start(self, session: Session, stream: Stream) -> None:
        self._counters.started += 1
        self._admission.started()
        self.observer.stream_started()
        stream.on_reader_done = partial(self._finished, session)
        stream.on_first_token = self.observer.first_token
        stream.start()
        if session.nursery is None:
            session.deferred.append(stream)
        else:
            session.nursery.start_soon(self._run_stream, session, stream)

    def _open_session(self, key: SessionKey, label: str | None) -> Session:
        assert self._nursery is not None
        self._retained.drop(key)
        session = Session(key=key, label=label, rules=SessionRules(self.join_budget))
        self._sessions[key] = session
        self._nursery.start_soon(self._session_main, session)
        return session

    async def _session_main(self, session: Session) -> None:
        async with trio.open_nursery() as nursery:
            session.nursery = nursery
            for stream in session.deferred:
                nursery.start_soon(self._run_stream, session, stream)
            session.deferred.clear()
            await session.closed.wait()

    async def _run_stream(self, session: Session, stream: Stream) -> None:
        logs.event(
            "stream_start",
            trace=stream.id,
            session=session.label,
            request=stream.request_id,
            worker=None if self.registry is None else self.registry.worker,
        )
        ending: Ending | None = None
        try:
            with stream.scope:
                try:
                    if stream.claim is not None:
                        await self._take_lease(session, stream, stream.claim)
                    result = await self.backend.generate(stream.job, stream)
                finally:
                    if stream.cancelled_at is not None:
                        self.observer.cancel_to_closed(trio.current_time() - stream.cancelled_at)
                ending = Ending.completed(result)
            if ending is None:  # our scope caught a cancel
                if stream.cancel_reason is not None:
                    ending = Ending.cancelled(stream.cancel_reason)
                elif stream.blocked_on_reader:
                    # The reader is stuck writing to a client that reads nothing: cut
                    # it off too (as a disconnect), or the session would wait for it.
                    # Outside the rules, but safe: no checkpoint separates this from
                    # the _finished() below, which tells the rules.
                    self._counters.cancels += 1
                    logs.event("stream_cancelled", trace=stream.id, reason="client_not_reading")
                    stream.mark_cancelled(CancelReason.DISCONNECTED)
                    ending = Ending.cancelled(CancelReason.DISCONNECTED)
                else:
                    ending = self._timed_out(stream)
        except ApiError as exc:
            ending = Ending(Outcome.UPSTREAM_ERROR, error=exc)
        except Exception:
            logs.log.exception("stream_failed trace=%s", stream.id)
            ending = Ending(Outcome.ERROR, error=ServerError("The model backend failed."))
        finally:
            if ending is None:  # cancelled from outside: the server is going away
                reason = stream.cancel_reason or CancelReason.SHUTDOWN
                ending = Ending.cancelled(reason)
            stream.end(ending)
            assert stream.started_at is not None
            duration = trio.current_time() - stream.started_at
            self.observer.stream_ended(ending.outcome, duration)
            # A cancelled stream that ends past its budget with nobody watching the
            # deadline (no waiter, no Stop) is a timed-out join, not a clean one.
            self._apply(session, session.rules.deadline_passed(trio.current_time()))
            logs.event(
                "stream_end",
                trace=stream.id,
                session=session.label,
                duration_ms=round(duration * 1000, 1),
                outcome=ending.outcome.value,
                tokens=stream.tokens,
            )
            try:
                if stream.reader_done or stream.cancel_reason is not None:
                    self._finished(session, stream)
                else:
                    # Released when its reader is done (Stream.on_reader_done); a
                    # reader stuck on a client that reads nothing is cut off.
                    assert session.nursery is not None
                    session.nursery.start_soon(self._cut_off_stuck_reader, session, stream)
            except Exception:
                # A bug here must cost one session, not the server (an exception
                # would climb through every nursery up to the lifespan's).
                logs.log.exception("session_cleanup_failed trace=%s", stream.id)

    # -- across processes (with a registry)

    def _on_registry_cancel(self, message: Message) -> None:
        """A request (or a Stop) was claimed somewhere: streams of its session with an
        older generation are superseded (or stopped); a waiting one never starts."""
        session = self._by_digest.get(message.session)
        if session is None:
            return
        session.newest_generation = max(session.newest_generation, message.generation)
        stopped = message.kind is MessageKind.STOP
        reason = CancelReason.STOPPED if stopped else CancelReason.SUPERSEDED
        for stream in list(session.streams.values()):
            claim = stream.claim
            if claim is not None and must_end(message, claim.generation):
                if stream.id in (session.rules.live, session.rules.waiter):
                    worker, by_worker = self._worker(), message.worker
                    if stopped:
                        logs.event(
                            "registry_stopped", trace=stream.id, by_worker=by_worker, worker=worker
                        )
                    else:
                        logs.event(
                            "registry_superseded",
                            trace=stream.id,
                            by_worker=by_worker,
                            worker=worker,
                        )
                self._cancel(session, stream.id, reason)

    def _worker(self) -> str | None:
        return None if self.registry is None else self.registry.worker

    async def _take_lease(self, session: Session, stream: Stream, claim: Claim) -> None:
        """Before the model: take the session's lease, waiting (within the join budget,
        counted from the claim) for another process's stream to finish."""
        assert self.registry is not None
        started = trio.current_time()
        # Set before the take: if it is cancelled (or times out) after Redis ran it, the
        # release still happens (it deletes the lease only if it is this generation's).
        stream.lease_taken = True
        result = await self.registry.take(claim, claim.claimed_at + self.join_budget)
        waited_ms = round((trio.current_time() - started) * 1000, 1)
        if result is TakeResult.STALE:
            logs.event("registry_stale", trace=stream.id, worker=self._worker())
            self._cancel(session, stream.id, CancelReason.SUPERSEDED)
            await trio.lowlevel.checkpoint()  # our scope is cancelled: ends here
            return
        if result is TakeResult.FORCED:
            logs.event(
                "prev_stream_timeout_on_cancel",
                level=logging.WARNING,
                session=session.label,
                trace=stream.id,
                remote=True,
                waited_ms=waited_ms,
            )
        logs.event("lease_taken", trace=stream.id, worker=self._worker(), waited_ms=waited_ms)
        assert session.nursery is not None
        session.nursery.start_soon(self._keep_lease, session, stream, claim)

    async def _keep_lease(self, session: Session, stream: Stream, claim: Claim) -> None:
        """Renew the lease until the stream is released; a renewal that finds a newer
        generation supersedes the stream (it missed the cancel message)."""
        assert self.registry is not None
        interval = renew_interval(self.registry.lease_seconds)
        renewed_at = trio.current_time()
        while not stream.lease_done.is_set():
            with trio.move_on_after(interval):
                await stream.lease_done.wait()
            if stream.lease_done.is_set():
                return
            try:
                current = await self.registry.renew(claim)
            except RegistryUnavailable:
                logs.event("lease_renew_failed", level=logging.WARNING, trace=stream.id)
                if trio.current_time() - renewed_at >= 2 * interval:
                    # Cut off from Redis for two renewals: the lease may expire before we
                    # can renew it, and a newer request elsewhere may then take the
                    # session. Stop first (self-fencing), as a stream superseded.
                    logs.event("registry_stale", trace=stream.id, worker=self._worker())
                    self._cancel(session, stream.id, CancelReason.SUPERSEDED)
                    return
                continue
            renewed_at = trio.current_time()
            if not current:
                logs.event("registry_stale", trace=stream.id, worker=self._worker())
                self._cancel(session, stream.id, CancelReason.SUPERSEDED)
                return

    async def _release_lease(self, stream: Stream, claim: Claim) -> None:
        assert self.registry is not None
        # Also during shutdown, briefly: a lease left behind blocks the session's next
        # request on another process until it expires.
        with trio.CancelScope(shield=True), trio.move_on_after(2 * self.registry.timeout + 1):
            try:
                await self.registry.release(claim)
            except RegistryUnavailable:
                logs.event("lease_release_failed", level=logging.WARNING, trace=stream.id)

    async def _cut_off_stuck_reader(self, session: Session, stream: Stream) -> None:
        """The answer is complete but its client stopped reading: after the inactivity
        time without a read, treat the client as gone (a disconnect) and release."""
        while not stream.reader_done:
            with trio.move_on_at(stream.last_read_at + self.inactivity_seconds):
                await stream.reader_finished.wait()
            if stream.reader_done or stream.id not in session.streams:
                return
            if trio.current_time() >= stream.last_read_at + self.inactivity_seconds:
                logs.event("stream_cancelled", trace=stream.id, reason="client_not_reading")
                self._cancel(session, stream.id, CancelReason.DISCONNECTED)
                return

    def _timed_out(self, stream: Stream) -> Ending:
        self._counters.cancels += 1
        if stream.tokens == 0:
            outcome, limit = Outcome.FIRST_TOKEN_TIMEOUT, self.first_token_seconds
            message = f"No first token within {limit:g} s; the stream was ended."
        else:
            outcome, limit = Outcome.INACTIVITY, self.inactivity_seconds
            message = f"No output for {limit:g} s; the stream was ended."
        logs.event("stream_cancelled", trace=stream.id, reason=outcome.value)
        code = f"{outcome.value}_timeout" if outcome is Outcome.INACTIVITY else outcome.value
        return Ending(outcome, error=UpstreamTimeout(message, code=code))

    def _finished(self, session: Session, stream: Stream) -> None:
        """``stream`` is over on both sides: tell the rules, maybe start the next one."""
        if session.streams.pop(stream.id, None) is None:
            return  # already released
        self._by_id.pop(stream.id, None)
        if stream.started_at is not None:
            self._admission.ended()
        if stream.lease_taken and stream.claim is not None:
            stream.lease_done.set()
            assert self._nursery is not None
            self._nursery.start_soon(self._release_lease, stream, stream.claim)
        self._apply(session, session.rules.release(stream.id), releasing=stream)
        if session.rules.idle:
            self._drop_session(session)

    def _drop_session(self, session: Session) -> None:
        if self._sessions.get(session.key) is session:
            del self._sessions[session.key]
            if session.newest is not None:
                self._retained.keep(session.key, session.newest.log, trio.current_time())
        if session.digest is not None and self._by_digest.get(session.digest) is session:
            del self._by_digest[session.digest]
        session.closed.set()
