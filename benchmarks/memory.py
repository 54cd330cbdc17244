"""Peak RSS of the gateway process while it holds many concurrent streams.

``streams`` clients each open a stream on a slow upstream (one token every
``token_interval`` seconds, so the machine is not saturated and what is
measured is the cost of holding the streams), ``start_interval`` apart:
setting a stream up costs jarvis-trio milliseconds of CPU, and streams opened
faster than it takes them overflow hypercorn's listen backlog (100), where
some connections fail (counted as ``errors``). The gateway's RSS is sampled
every 100 ms until every stream has its first token (or for 3 s none got one,
or ``ramp`` seconds), then for ``hold`` seconds more. ``served`` counts the streams that had a first
token: the baseline serves only as many as its executor has threads, the rest
wait (their requests are open, so their memory is counted too).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from benchmarks.load import StreamCount, chat_body, run_streams, started, wait_started
from benchmarks.stack import Stack


@dataclass(frozen=True)
class MemoryResult:
    streams: int
    served: int  # streams that got their first token
    errors: int  # streams that failed (HTTP error, refused connection, ...)
    rss_idle_bytes: int  # before the streams
    rss_peak_bytes: int
    threads_peak: int

    @property
    def per_stream_bytes(self) -> float:
        return (self.rss_peak_bytes - self.rss_idle_bytes) / self.streams


def measure_memory(
    stack: Stack,
    streams: int,
    *,
    token_interval: float = 2.0,
    start_interval: float = 0.015,
    ramp: float = 60.0,
    hold: float = 2.0,
    on_sample: Callable[[int], None] | None = None,
) -> MemoryResult:
    model = f"llama3.2:1b+slow={token_interval:g}+tokens=1000"
    counts = [StreamCount() for _ in range(streams)]
    bodies = [chat_body(model, f"memory {i}") for i in range(streams)]
    idle = stack.server.memory_info().rss
    peak = {"rss": idle, "threads": stack.server.num_threads()}

    def sample() -> None:
        peak["rss"] = max(peak["rss"], stack.server.memory_info().rss)
        peak["threads"] = max(peak["threads"], stack.server.num_threads())
        if on_sample:
            on_sample(started(counts))

    async def held() -> None:
        await wait_started(counts, within=ramp, quiet=3.0, on_poll=lambda _: sample())
        with trio.move_on_after(hold):
            while True:
                sample()
                await trio.sleep(0.1)

    trio.run(
        lambda: run_streams(
            stack.url,
            bodies,
            counts,
            hold=held,
            http_timeout=ramp + 30,
            start_interval=start_interval,
            headers=stack.headers,
        )
    )
    return MemoryResult(
        streams=streams,
        served=started(counts),
        errors=sum(c.error is not None for c in counts),
        rss_idle_bytes=idle,
        rss_peak_bytes=peak["rss"],
        threads_peak=peak["threads"],
    )
