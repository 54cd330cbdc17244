"""The aftermath of an overload: the clients of a saturated run leave; how long until the
upstream is quiet?

``streams`` clients open streams of long answers (more tokens per second in all than
the gateway relays on this machine), the run goes on for ``hold`` seconds once they
have started (or for ``ramp`` seconds at most), and then every client leaves at once
(its connection is closed). From that moment the simulator's ``/_sim/stats`` is polled
every 50 ms, for ``bound`` seconds at most, until it answers no generation at all; the
time reported is then read from its records (:func:`last_end`): the last generation's
end, from the moment the clients left. Until then, the upstream (a GPU, in production)
goes on producing tokens nobody reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from benchmarks.load import StreamCount, chat_body, run_streams, started, wait_started
from benchmarks.stack import Stack

MODEL = "llama3.2:1b"


@dataclass(frozen=True)
class AftermathResult:
    streams: int
    started: int  # streams that had their first token when the clients left
    live_at_leave: int  # generations the simulator was answering when they left
    quiet_after_s: float | None  # until it answered none; None: not within the bound
    live_after_bound: int  # generations still answered when the bound ran out
    open_after_bound: int  # upstream connections still open then (pooled ones too)
    bound_s: float


def last_end(connections: list[dict[str, Any]]) -> float:
    """When the simulator last stopped answering a generation (its end, or its
    connection's close if that came first), from ``/_sim/connections``; 0.0 if none."""
    ends = []
    for conn in connections:
        for request in conn["requests"]:
            if request["path"] == "/api/chat":
                found = [t for t in (request["ended"], conn["closed"]) if t is not None]
                ends.append(min(found, default=0.0))
    return max(ends, default=0.0)


def _stats(sim: httpx.Client) -> dict[str, Any]:
    stats: dict[str, Any] = sim.get("/_sim/stats").json()
    return stats


def measure_aftermath(
    stack: Stack,
    streams: int,
    *,
    ramp: float,
    hold: float,
    bound: float,
    on_poll: Callable[[int], None] | None = None,
) -> AftermathResult:
    # Long enough that no answer ends by itself within the measurement.
    tokens = round(stack.tokens_per_second * (ramp + hold + bound + 30))
    counts = [StreamCount() for _ in range(streams)]
    bodies = [chat_body(f"{MODEL}+tokens={tokens}", f"overload {i}") for i in range(streams)]
    left: dict[str, Any] = {}

    with httpx.Client(base_url=stack.sim_url, timeout=10) as sim:

        async def saturated() -> None:
            await wait_started(counts, within=ramp, quiet=2.0, on_poll=on_poll)
            await trio.sleep(hold)
            left["started"] = started(counts)
            left["live"] = int(_stats(sim)["live_requests"])
            left["t"] = time.monotonic()  # run_streams cancels every client now

        trio.run(
            lambda: run_streams(
                stack.url,
                bodies,
                counts,
                hold=saturated,
                http_timeout=ramp + hold + 30,
                headers=stack.headers,
            )
        )
        quiet = None
        stats = _stats(sim)
        while time.monotonic() - left["t"] < bound:  # bounded poll of the simulator
            if stats["live_requests"] == 0:
                quiet = max(0.0, last_end(sim.get("/_sim/connections").json()) - left["t"])
                break
            time.sleep(0.05)
            stats = _stats(sim)
    return AftermathResult(
        streams=streams,
        started=left["started"],
        live_at_leave=left["live"],
        quiet_after_s=quiet,
        live_after_bound=int(stats["live_requests"]),
        open_after_bound=int(stats["open_connections"]),
        bound_s=bound,
    )
