"""A storm: N streaming requests over M sessions, random gaps, random client disconnects.

The plan is drawn up front from a seeded RNG (:func:`plan_storm`, pure): per
session a sequence of requests, each sent a random gap after the previous one
(so it usually supersedes it), with a random answer length, sometimes an
upstream that stalls after two tokens or a slow one, and sometimes a client
that leaves after a few tokens. Sessions run concurrently.

Counted afterwards:

- **double-live sessions**: from the simulator's per-session concurrency
  records (``/_sim/stats``, ``session_peak``): a session whose upstream ever
  had two requests being answered at once;
- **hung requests**: no ending within ``request_timeout``;
- the gateway process's threads, descriptors and RSS before the storm (after
  one warm-up request) and after it, once it had ``settle`` seconds to clean
  up (trio keeps an idle worker thread up to 10 s), and the upstream
  connections still open then.

Both variants run with a 1 s inactivity timeout (a stalled upstream that
nothing supersedes then ends) and a 1 s join budget, as ``tests/test_storm.py``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

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
    "JARVIS_PREV_STREAM_TIMEOUT": "1.0",
}


@dataclass(frozen=True)
class StormRequest:
    session: str
    gap_s: float  # after the previous request of its session was sent
    model: str
    leave_after: int | None  # the client leaves after this many tokens


def plan_storm(
    requests: int, sessions: int, *, seed: int, max_gap: float = 0.1, leave_share: float = 0.2
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
    errors: int
    double_live_sessions: int
    max_session_peak: int
    before: Footprint
    after: Footprint
    upstream_open_after: int  # simulator connections still open after the settle time

    @property
    def leaked_threads(self) -> int:
        return max(0, self.after.threads - self.before.threads)

    @property
    def leaked_fds(self) -> int:
        return max(0, self.after.fds - self.before.fds)


def _session_stats(stack: Stack) -> tuple[dict[str, int], int]:
    with httpx.Client(base_url=stack.sim_url, timeout=10) as sim:
        stats = sim.get("/_sim/stats").json()
    peaks = {k: v for k, v in stats["session_peak"].items() if "/storm-" in k}
    return peaks, int(stats["open_connections"])


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
        async with open_client(stack.url, timeout=request_timeout) as client:
            async with trio.open_nursery() as nursery:
                for s, reqs in enumerate(plan):
                    nursery.start_soon(session, client, reqs, s)

    trio.run(warm_up)
    time.sleep(0.5)
    before = footprint(stack.server)
    t0 = time.monotonic()
    trio.run(storm)
    duration = time.monotonic() - t0
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:  # bounded: give the server time to clean up
        _, open_upstreams = _session_stats(stack)
        if open_upstreams == 0 and stack.server.num_threads() <= before.threads:
            break
        time.sleep(0.25)
    after = footprint(stack.server)
    peaks, open_upstreams = _session_stats(stack)
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
        errors=sum(not h[0] and c.error is not None for _, c, h in counts),
        double_live_sessions=sum(v >= 2 for v in peaks.values()),
        max_session_peak=max(peaks.values(), default=0),
        before=before,
        after=after,
        upstream_open_after=open_upstreams,
    )
