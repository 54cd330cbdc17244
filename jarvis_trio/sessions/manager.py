"""The trio glue: sessions own nurseries, streams run in them, the rules decide.

Theory of operation
-------------------
The :class:`SessionManager` runs one nursery for the whole server. Each
session gets a task in it that owns the session's own nursery, and every
stream of that session runs there under its own cancel scope. All decisions
(start, wait, cancel, reject, give up on a join) come from the session's
:class:`~jarvis_trio.rules.SessionRules`; the
:class:`~jarvis_trio.sessions.table.SessionTable` only carries them out, in
its ``apply``.

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
its grace period (:func:`~jarvis_trio.sessions.watchers.expire_detached`).

Across processes (a :class:`~jarvis_trio.registry.Registry` is configured), a
request with a session id first claims its generation
(:meth:`SessionManager.admit`). The local rules still decide first; a started
stream then takes the session's :class:`~jarvis_trio.sessions.lease.Lease`
before it reaches the model. A cancel message from a newer generation, or a
renewal that finds one, cancels the stream through the rules like any
supersede (:func:`~jarvis_trio.sessions.control.on_registry_cancel`).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from functools import partial

import trio

from jarvis_trio import logs
from jarvis_trio.admission import Admission, Refuse, refusal_error
from jarvis_trio.auth import owner_label
from jarvis_trio.generation import Backend, GenerationRequest
from jarvis_trio.registry import Claim, Registry
from jarvis_trio.replay import ReplayLog, RetainedLogs
from jarvis_trio.rules import CancelReason
from jarvis_trio.sessions import control
from jarvis_trio.sessions.lease import Lease
from jarvis_trio.sessions.observer import NullObserver, Observer
from jarvis_trio.sessions.reports import ManagerStatistics, RequestInfo, StopReport
from jarvis_trio.sessions.session import Entry, SessionKey
from jarvis_trio.sessions.table import SessionTable
from jarvis_trio.streams import Stream, StreamLimits


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
        # None: sessions are this process's alone (the default, in-memory registry).
        self.registry = registry
        self.observer: Observer = observer or NullObserver()
        self.join_budget = join_budget
        self.limits = StreamLimits(
            inactivity_seconds=inactivity_seconds,
            first_token_seconds=first_token_seconds,
            replay_chars=replay_chars,
        )
        # Who may open a stream (None: no bound but the thread limiter's).
        self._admission = Admission(max_streams or sys.maxsize, retry_after)
        self._table = SessionTable(
            backend,
            self.observer,
            self._admission,
            join_budget=join_budget,
            retained=RetainedLogs(retention=replay_retention, capacity=replay_retained),
            registry=registry,
        )
        self._closing = False
        self._stopped = trio.Event()

    # -- lifetime

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`shutdown` (or until cancelled)."""
        try:
            async with trio.open_nursery() as nursery:
                self._table.nursery = nursery
                if self.registry is not None:
                    await nursery.start(
                        self.registry.serve, partial(control.on_registry_cancel, self._table)
                    )
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
        nursery = self._table.nursery
        if nursery is None or self._stopped.is_set():
            return
        if self._closing:  # a second call (serve's trigger, then the app's lifespan)
            with trio.move_on_after(self.join_budget):
                await self._stopped.wait()
            return
        self._closing = True
        self._admission.close()
        now = trio.current_time()
        end = min(trio.current_effective_deadline(), now + 2 * self.join_budget)
        sessions = list(self._table.sessions.values())
        for session in sessions:
            actions, _ = session.rules.cancel_all(CancelReason.SHUTDOWN, now)
            self._table.apply(session, actions)
        try:
            with trio.move_on_at(min(end, now + self.join_budget)):
                for session in sessions:
                    await session.closed.wait()
        finally:
            nursery.cancel_scope.cancel(reason="shutdown")
        with trio.move_on_at(end):
            await self._stopped.wait()

    @property
    def stopped(self) -> bool:
        """Every stream task (and so every worker thread it waited for) has ended."""
        return self._stopped.is_set()

    # -- requests

    def check_accepting(self, owner: str, session_id: str | None) -> None:
        """Raise what a new request of ``(owner, session_id)`` would get now: a 503 while
        the server shuts down, a 429 while every stream slot is taken (unless its
        session runs a stream: the new one takes over that stream's slot)."""
        running = session_id is not None and (owner, session_id) in self._table.sessions
        if self._table.nursery is None:
            self._admission.close()
        verdict = self._admission.arrive(session_running=running)
        if isinstance(verdict, Refuse):
            admission = self._admission
            logs.event(
                "stream_refused",
                reason=verdict.reason.value,
                running=admission.running,
                limit=admission.limit,
            )
            self.observer.stream_refused(verdict.reason.value)
            raise refusal_error(verdict, admission)

    async def admit(
        self,
        owner: str,
        session_id: str | None,
        job: GenerationRequest,
        request_id: str,
        *,
        resume_seconds: float = 0.0,
    ) -> Stream:
        """Check, claim across processes (with a registry), then :meth:`submit`.

        The upstream sees the session as ``<owner label>/<session id>``
        (``X-Jarvis-Session``), never the owner itself.
        """
        claim = None
        if self.registry is not None and session_id is not None:
            # A closing (or full) server must not supersede the session everywhere,
            # then refuse.
            self.check_accepting(owner, session_id)
            claim = await self.registry.claim(owner, session_id)
        if session_id is not None:
            label = claim.owner_label if claim is not None else owner_label(owner)
            job = replace(job, trace_session=f"{label}/{session_id}")
        elif job.trace_session is not None:
            job = replace(job, trace_session=None)
        return self.submit(
            owner, session_id, job, request_id, resume_seconds=resume_seconds, claim=claim
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
        table = self._table
        self.check_accepting(owner, session_id)
        limits = self.limits
        if resume_seconds != limits.resume_seconds:
            limits = replace(limits, resume_seconds=resume_seconds)
        stream = Stream(job=job, session_id=session_id, request_id=request_id, limits=limits)
        # A request without a session gets a key no client can name (NUL is not
        # allowed in X-Session-Id).
        key: SessionKey = (owner, session_id if session_id is not None else "\0" + stream.id)
        session = table.sessions.get(key) or table.open(key, session_id)
        entry = Entry(stream, session, claim)
        if claim is not None:
            if claim.generation < session.newest_generation:
                # A newer request of the session was claimed (here or elsewhere) while
                # this one's claim was on its way: latest wins, this one never starts.
                logs.event("stream_cancelled", trace=stream.id, reason="superseded", started=False)
                stream.reject(CancelReason.SUPERSEDED)
                if session.rules.idle and not session.entries:
                    table.drop(session)
                return stream
            session.newest_generation = claim.generation
            session.digest = claim.session
            table.by_digest[claim.session] = session
            assert self.registry is not None
            entry.lease = Lease(self.registry, claim, stream.id)
        session.entries[stream.id] = entry
        if session_id is not None:
            session.newest = stream
        table.entries[stream.id] = entry
        actions, entry.wait = session.rules.submit(stream.id, trio.current_time())
        table.apply(session, actions)
        return stream

    async def wait_turn(self, stream: Stream) -> None:
        """Wait until ``stream`` was started or rejected, within its join budget."""
        if stream.decided.is_set():
            return
        entry = self._table.entries[stream.id]
        assert entry.wait is not None
        with trio.move_on_at(entry.wait.deadline):
            await stream.decided.wait()
        if not stream.decided.is_set():
            session = entry.session
            self._table.apply(session, session.rules.deadline_passed(trio.current_time()))
        assert stream.decided.is_set()

    def abandon(self, stream: Stream) -> None:
        """The HTTP exchange that owns ``stream`` is over: cancel it if it still runs
        (or, for a resumable stream that has started, detach it for viewers)."""
        entry = self._table.entries.get(stream.id)
        if entry is not None and not stream.producer_done:
            resumable = stream.resume_seconds > 0 and stream.started_at is not None
            if resumable and stream.cancel_reason is None and not stream.detached:
                self._table.detach(entry.session, stream)
                return
            self._table.cancel(entry.session, stream.id, CancelReason.DISCONNECTED)
        stream.close_reader()  # releases a finished stream whose reader had not ended

    def watch(self, owner: str, session_id: str) -> ReplayLog | None:
        """The log of the session's newest stream (live, or recently finished), if any."""
        session = self._table.sessions.get((owner, session_id))
        if session is not None and session.newest is not None:
            return session.newest.log
        return self._table.retained.get((owner, session_id), trio.current_time())

    # -- Stop, and what runs

    async def stop(self, owner: str, session_id: str) -> StopReport:
        """The Stop button: cancel the session's stream and join it within the budget.

        With a registry the Stop reaches the stream wherever it runs: it claims a
        generation of its own (which stops older streams everywhere) and, when no
        stream of the session runs here, waits for the lease's holder to give it back.
        """
        return await control.stop(self._table, owner, session_id)

    async def cancel_request(self, owner: str, stream_id: str) -> StopReport:
        """Cancel one request by its stream id; Stop's semantics (answers after the join)."""
        return await control.cancel_request(self._table, owner, stream_id)

    def requests_of(self, owner: str) -> list[RequestInfo]:
        """The owner's streams that are waiting, live, being cancelled or past their join."""
        return control.requests_of(self._table, owner)

    def statistics(self) -> ManagerStatistics:
        sessions = self._table.sessions.values()
        return ManagerStatistics(
            sessions=len(sessions),
            live_streams=sum(s.rules.live is not None for s in sessions),
            running_streams=self._admission.running,
            max_streams=min(self._admission.limit, 2**31 - 1),
            waiting_streams=sum(s.rules.waiter is not None for s in sessions),
            refused={r.value: n for r, n in self._admission.refused.items()},
        )
