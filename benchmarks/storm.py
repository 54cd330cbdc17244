"""A storm: N streaming requests over M sessions, random gaps, random client disconnects.

The plan is drawn up front from a seeded RNG (:func:`plan_storm`, pure): per
session a sequence of requests, each sent a random gap (up to 1 s) after the previous one
(so it usually supersedes it), with a random answer length, sometimes an
upstream that stalls after two tokens or a slow one, and sometimes a client
that leaves after a few tokens. Sessions run concurrently.

Counted afterwards:

- **double-live sessions**: from the simulator's per-session concurrency
  records (``/_sim/stats``, ``session_peak``): a session whose upstream ever
  had two requests being answered at once. The simulator counts a request as
  answered until its answer task has unwound, which it records a little
  *after* the connection's close; so this count is also checked on the wire,
  from the connection records (:func:`overlapping_sessions`): a request that
  arrived while an earlier request of its session still held its connection
  (open, and not answered to its end);
- **hung requests**: no ending within ``request_timeout``, and how many of them
  never even got their response headers (a request queued behind an
  overloaded server, rather than a stream that stopped);
- the gateway process's threads, descriptors and RSS before the storm (after
  one warm-up request) and after it, once it had ``settle`` seconds to clean
  up (trio keeps an idle worker thread up to 10 s), and the upstream
  connections still open then;
- **join timeouts**: ``prev_stream_timeout_on_cancel`` in the server's log, a
  cancelled stream that did not finish within the join budget (the next one
  then starts anyway, so the simulator may see two live upstreams).

Both variants run with a 1 s inactivity timeout (a stalled upstream that
nothing supersedes then ends) and a 1 s join budget, as ``tests/http/test_storm.py``.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil
import trio

from benchmarks.load import StreamCount, chat_body, open_client, read_stream
from benchmarks.stack import Stack

MODEL = "llama3.2:1b"
FAULTS = ("", "", "", "+stall_after=2", "+slow=0.02")
# Settings of the gateway for the storm (both variants read them).
STORM_ENV = {
    "JARVIS_STREAM_INACTIVITY_SECONDS": "1.0",
    "JARVIS_FIRST_TOKEN_TIMEOUT": "2.0",
    "JARVIS_JOIN_BUDGET": "1.0",
}


@dataclass(frozen=True)
class StormRequest:
    session: str
    gap_s: float  # after the previous request of its session was sent
    model: str
    leave_after: int | None  # the client leaves after this many tokens


def plan_storm(
    requests: int, sessions: int, *, seed: int, max_gap: float = 1.0, leave_share: float = 0.2
) -> list[list[StormRequest]]:
    """``requests`` requests dealt at random over ``sessions`` sessions (per session, in
    order of sending). Pure: the same arguments give the same plan."""
    rng = random.Random(seed)
    plan: list[list[StormRequest]] = [[] for _ in range(sessions)]
    for _ in range(requests):
        s = rng.randrange(sessions)
        model = f"{MODEL}+tokens={rng.randint(1, 60)}{rng.choice(FAULTS)}"
        leave = rng.randint(0, 5) if rng.random() < leave_share else None
        plan[s].append(StormRequest(f"storm-{s}", rng.uniform(0, max_gap), model, leave))
    return [p for p in plan if p]


@dataclass(frozen=True)
class Footprint:
    threads: int
    fds: int
    rss_bytes: int


def footprint(process: psutil.Process) -> Footprint:
    return Footprint(process.num_threads(), process.num_fds(), process.memory_info().rss)


@dataclass(frozen=True)
class StormResult:
    requests: int
    sessions: int
    seed: int
    duration_s: float
    completed: int  # read to their ending ([DONE])
    left: int  # the client left on purpose
    hung: int  # no ending within the request timeout
    hung_unanswered: int  # of those, how many never got response headers (queued)
    errors: int
    double_live_sessions: int  # the simulator's session_peak reached 2
    overlapping_sessions: int  # on the wire: see overlapping_sessions()
    max_session_peak: int
    before: Footprint
    after: Footprint
    upstream_open_after: int  # simulator connections still open after the settle time
    join_timeouts: int  # prev_stream_timeout_on_cancel in the server's log

    @property
    def leaked_threads(self) -> int:
        return max(0, self.after.threads - self.before.threads)

    @property
    def leaked_fds(self) -> int:
        return max(0, self.after.fds - self.before.fds)


def overlapping_sessions(connections: list[dict[str, Any]], marker: str = "/storm-") -> int:
    """Sessions (``X-Jarvis-Session`` containing ``marker``) in which a request reached
    the simulator while an earlier request of the session still held its connection,
    from ``/_sim/connections``: two live upstreams on the wire.

    A request that was not answered to its end holds its connection until the
    connection closes (the gateway's cancel is that close). One answered to its end
    (``completed``) holds it until that end: a kept-alive connection then waits, idle,
    for any request, and no longer belongs to the session."""
    spans: dict[str, list[tuple[float, float]]] = {}
    for conn in connections:
        closed = math.inf if conn["closed"] is None else float(conn["closed"])
        for request in conn["requests"]:
            session = request["headers"].get("x-jarvis-session", "")
            if marker in session:
                ended = request.get("ended")
                held = closed
                if request.get("outcome") == "completed" and ended is not None:
                    held = float(ended)
                spans.setdefault(session, []).append((float(request["received"]), held))
    overlapping = 0
    for found in spans.values():
        found.sort()
        latest_close = -math.inf
        for received, closed in found:
            if received < latest_close:
                overlapping += 1
                break
            latest_close = max(latest_close, closed)
    return overlapping


def _session_stats(stack: Stack) -> tuple[dict[str, int], int, int]:
    with httpx.Client(base_url=stack.sim_url, timeout=10) as sim:
        stats = sim.get("/_sim/stats").json()
        connections = sim.get("/_sim/connections").json()
    peaks = {k: v for k, v in stats["session_peak"].items() if "/storm-" in k}
    return peaks, int(stats["open_connections"]), overlapping_sessions(connections)


def run_storm(
    stack: Stack,
    *,
    requests: int,
    sessions: int,
    seed: int,
    request_timeout: float,
    settle: float,
    on_request: Callable[[], None] | None = None,
) -> StormResult:
    plan = plan_storm(requests, sessions, seed=seed)
    counts: list[tuple[StormRequest, StreamCount, list[bool]]] = []

    async def warm_up() -> None:
        async with open_client(stack.url, timeout=10) as client:
            await read_stream(client, chat_body(MODEL + "+tokens=3", "warm-up"), StreamCount())

    async def one(client: httpx.AsyncClient, req: StormRequest, i: int) -> None:
        count = StreamCount()
        hung = [True]
        counts.append((req, count, hung))
        with trio.move_on_after(request_timeout):
            await read_stream(
                client,
                chat_body(req.model, f"storm request {i}"),
                count,
                headers={"X-Session-Id": req.session},
                stop_after_tokens=req.leave_after,
            )
            hung[0] = False
        if on_request:
            on_request()

    async def session(client: httpx.AsyncClient, reqs: list[StormRequest], s: int) -> None:
        async with trio.open_nursery() as nursery:
            for i, req in enumerate(reqs):
                await trio.sleep(req.gap_s)
                nursery.start_soon(one, client, req, s * 100_000 + i)

    async def storm() -> None:
        # A client (and connection pool) per session, unbounded: a session has only a few
        # requests open at once. One shared pool with a bound let requests wait in it for
        # up to 30 s while about 12 requests held connections (a stall of httpcore 1.0.9's
        # pool under contention; docs/benchmarks.md): they counted as hung, never sent.
        async with contextlib.AsyncExitStack() as clients:
            async with trio.open_nursery() as nursery:
                for s, reqs in enumerate(plan):
                    client = open_client(stack.url, timeout=request_timeout)
                    nursery.start_soon(session, await clients.enter_async_context(client), reqs, s)

    trio.run(warm_up)
    time.sleep(0.5)
    before = footprint(stack.server)
    t0 = time.monotonic()
    trio.run(storm)
    duration = time.monotonic() - t0
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:  # bounded: give the server time to clean up
        _, open_upstreams, _ = _session_stats(stack)
        if open_upstreams == 0 and stack.server.num_threads() <= before.threads:
            break
        time.sleep(0.25)
    after = footprint(stack.server)
    peaks, open_upstreams, overlapping = _session_stats(stack)
    hung = sum(h[0] for _, _, h in counts)
    left = sum(
        not h[0] and r.leave_after is not None and not c.done and c.error is None
        for r, c, h in counts
    )
    return StormResult(
        requests=len(counts),
        sessions=len(plan),
        seed=seed,
        duration_s=duration,
        completed=sum(not h[0] and c.done for _, c, h in counts),
        left=left,
        hung=hung,
        hung_unanswered=sum(h[0] and not c.responded for _, c, h in counts),
        errors=sum(not h[0] and c.error is not None for _, c, h in counts),
        double_live_sessions=sum(v >= 2 for v in peaks.values()),
        overlapping_sessions=overlapping,
        max_session_peak=max(peaks.values(), default=0),
        before=before,
        after=after,
        upstream_open_after=open_upstreams,
        join_timeouts=stack.spawned.events["prev_stream_timeout_on_cancel"],
    )
