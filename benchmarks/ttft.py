"""Time to first token through the gateway, against calling the simulator directly.

Rounds alternate the two paths (so a busy moment of a shared machine hits both):
``POST /api/chat`` on the simulator until its first NDJSON line with content,
and ``POST /v1/chat/completions`` on the gateway until its first content chunk.
The simulator answers its first token after ``slow`` seconds (1 ms), so what
is left is HTTP and the gateway's own work. Both clients keep their connection
alive; so does the gateway upstream (``JARVIS_UPSTREAM_KEEPALIVE``, on by
default): with it set to 0, a new upstream connection per stream is part of
its overhead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx

from benchmarks.handoff import MODEL, is_content_chunk
from benchmarks.stack import Stack

ANSWER = MODEL + "+slow=0.001+tokens=3"


@dataclass(frozen=True)
class TtftResult:
    direct_ms: list[float | None]  # the simulator, called directly
    gateway_ms: list[float | None]  # through the variant


def time_first(lines: Iterator[str], t0: float, is_token: Callable[[str], bool]) -> float | None:
    """Milliseconds from ``t0`` to the first token line; the rest is read too (so the
    connection is kept alive for the next round)."""
    found = None
    for line in lines:
        if found is None and is_token(line):
            found = (time.monotonic() - t0) * 1000
    return found


def measure_ttft(
    stack: Stack,
    rounds: int,
    *,
    timeout: float = 5.0,
    on_round: Callable[[], None] | None = None,
) -> TtftResult:
    direct: list[float | None] = []
    gateway: list[float | None] = []
    with (
        httpx.Client(base_url=stack.sim_url, timeout=timeout) as sim,
        httpx.Client(base_url=stack.url, timeout=timeout, headers=stack.headers) as server,
    ):

        def via_sim(i: int) -> float | None:
            body = {"model": ANSWER, "messages": [{"role": "user", "content": f"direct {i}"}]}
            t0 = time.monotonic()
            with sim.stream("POST", "/api/chat", json=body) as r:
                return time_first(r.iter_lines(), t0, is_content_chunk)

        def via_gateway(i: int) -> float | None:
            body = {
                "model": ANSWER,
                "messages": [{"role": "user", "content": f"gateway {i}"}],
                "stream": True,
            }
            t0 = time.monotonic()
            with server.stream("POST", "/v1/chat/completions", json=body) as r:
                return time_first(r.iter_lines(), t0, is_content_chunk)

        for i in range(rounds):
            for path, values in ((via_sim, direct), (via_gateway, gateway)):
                try:
                    values.append(path(i))
                except httpx.HTTPError:
                    values.append(None)
            if on_round:
                on_round()
    return TtftResult(direct, gateway)
