"""Stop, cancel one request, list what runs, and cancels from other processes.

Each one asks the rules (a transition or a query), carries out what they return
through the table, and, for Stop, joins the cancelled stream within its budget.
"""

from __future__ import annotations

import trio

from jarvis_trio import logs
from jarvis_trio.registry.fencing import Message, MessageKind, must_end
from jarvis_trio.rules import CancelReason, StreamState
from jarvis_trio.sessions.reports import RequestInfo, StopReport
from jarvis_trio.sessions.session import Session
from jarvis_trio.sessions.table import SessionTable
from jarvis_trio.streams import Stream


async def stop(table: SessionTable, owner: str, session_id: str) -> StopReport:
    """Stop the session's stream, here or (with a registry) in whichever process runs it:
    a generation of its own stops older streams everywhere; when none runs here, wait
    (within the join budget) for the lease's holder to give it back."""
    registry = table.registry
    if registry is None:
        return await stop_here(table, owner, session_id)
    started = trio.current_time()
    claim = await registry.claim(owner, session_id, stop=True)
    report = await stop_here(table, owner, session_id)
    if report.result != "nothing_live":
        return report
    result = await registry.wait_stopped(claim, claim.claimed_at + table.join_budget)
    return StopReport(result, None, (trio.current_time() - started) * 1000)


async def stop_here(table: SessionTable, owner: str, session_id: str) -> StopReport:
    """Stop the session's streams in this process and join the one being cancelled."""
    session = table.sessions.get((owner, session_id))
    if session is None:
        return StopReport("nothing_live")
    now = trio.current_time()
    actions, wait = session.rules.cancel_all(CancelReason.STOPPED, now)
    # Take the stream to join before the actions run: applying them may release it.
    target = session.entries.get(wait.joining) if wait is not None else None
    table.apply(session, actions)
    if wait is None or target is None:
        return StopReport("nothing_live")
    return await _join(table, session, target.stream, wait.deadline, since=now)


async def cancel_request(table: SessionTable, owner: str, stream_id: str) -> StopReport:
    """Cancel one request by its stream id; Stop's semantics (answers after the join)."""
    entry = table.entries.get(stream_id)
    if entry is None or entry.session.key[0] != owner:
        return StopReport("nothing_live")
    session, rules = entry.session, entry.session.rules
    state = rules.state_of(stream_id)
    if state is StreamState.ZOMBIE:
        return StopReport("join_timeout", stream_id)
    table.cancel(session, stream_id, CancelReason.STOPPED)
    if state is StreamState.WAITING:
        return StopReport("never_started", stream_id)
    deadline = rules.join_deadline(stream_id)
    if deadline is None:  # released already (its answer was over): nothing to wait for
        deadline = trio.current_time()
    return await _join(table, session, entry.stream, deadline)


def requests_of(table: SessionTable, owner: str) -> list[RequestInfo]:
    """The owner's streams that are waiting, live, being cancelled or past their join."""
    now = trio.current_time()
    out = []
    for stream_id, entry in table.entries.items():
        state = entry.session.rules.state_of(stream_id)
        if entry.session.key[0] != owner or state is None:
            continue
        stream = entry.stream
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


async def _join(
    table: SessionTable,
    session: Session,
    target: Stream,
    deadline: float,
    *,
    since: float | None = None,
) -> StopReport:
    """Wait for ``target`` until ``deadline``; ``waited_ms`` counts from ``since`` (the
    cancel), so a join that ran out of budget reports at least the budget."""
    started = trio.current_time() if since is None else since
    with trio.move_on_at(deadline):
        await target.producer_ended.wait()
    waited_ms = (trio.current_time() - started) * 1000
    if target.producer_done:
        logs.event("prev_stream_finished_cleanly", session=session.label, trace=target.id)
        return StopReport("finished_cleanly", target.id, waited_ms)
    table.apply(session, session.rules.deadline_passed(trio.current_time()))
    return StopReport("join_timeout", target.id, waited_ms)


def on_registry_cancel(table: SessionTable, message: Message) -> None:
    """A request (or a Stop) was claimed somewhere: streams of its session with an
    older generation are superseded (or stopped); a waiting one never starts."""
    session = table.by_digest.get(message.session)
    if session is None:
        return
    session.newest_generation = max(session.newest_generation, message.generation)
    stopped = message.kind is MessageKind.STOP
    reason = CancelReason.STOPPED if stopped else CancelReason.SUPERSEDED
    worker = None if table.registry is None else table.registry.worker
    for entry in list(session.entries.values()):
        claim, trace = entry.claim, entry.stream.id
        if claim is not None and must_end(message, claim.generation):
            state = session.rules.state_of(trace)
            if state in (StreamState.LIVE, StreamState.WAITING):
                by_worker = message.worker
                if stopped:
                    logs.event("registry_stopped", trace=trace, by_worker=by_worker, worker=worker)
                else:
                    logs.event(
                        "registry_superseded", trace=trace, by_worker=by_worker, worker=worker
                    )
            table.cancel(session, trace, reason)
