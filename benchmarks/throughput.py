"""Tokens/s and server CPU per relayed token at a given number of concurrent streams.

Every stream asks a paced upstream (the simulator at ``--tokens-per-second``,
50 by default, per stream) for a long answer. After a warm-up (until every
stream has its first token, or for 1 s no new stream got one, or ``warmup``
seconds), a window of ``window``
seconds is measured: tokens the clients received, the gateway process's CPU
time (user + system, psutil) and this client's. Then the clients leave.

``served`` is how many streams received a token within the window: the
baseline's executor threads (``min(32, cores + 4)``) bound how many it serves
at once, a property of its design that is reported, not fixed.

``probes`` > 0: after the window, while the streams still run, that many new
streams are opened one at a time (a short answer each, its first token after
1 ms at the simulator), and each one's time to first token is kept: what a user
who arrives at a busy gateway waits (``probe_ttft_ms``; ``None``: no answer within
``PROBE_TIMEOUT``, and then neither for the probes after it, which are not sent).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx
import psutil
import trio

from benchmarks.handoff import is_content_chunk
from benchmarks.load import StreamCount, chat_body, run_streams, wait_started
from benchmarks.stack import Stack
from benchmarks.stats import summarize

MODEL = "llama3.2:1b"


@dataclass(frozen=True)
class ThroughputPoint:
    concurrency: int
    window_s: float
    tokens: int  # received by the clients within the window
    server_cpu_s: float  # the gateway process, within the window
    client_cpu_s: float  # this process (the clients), within the window
    sim_cpu_s: float  # the simulator, within the window
    served: int  # streams that received a token within the window
    started: int  # streams that had their first token by the window's end
    ttft_p50_s: float | None  # of the streams that started
    ttft_p99_s: float | None
    probe_ttft_ms: tuple[float | None, ...] = ()  # new streams opened while these ran

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.window_s

    @property
    def cpu_us_per_token(self) -> float | None:
        return self.server_cpu_s / self.tokens * 1e6 if self.tokens else None


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


PROBE = MODEL + "+slow=0.001+tokens=3"
PROBE_TIMEOUT = 10.0  # s for a probe's whole answer


async def _probe(stack: Stack, i: int) -> float | None:
    """One new stream's time to first token (ms), read to its end (the caller bounds it)."""
    first: float | None = None
    async with httpx.AsyncClient(base_url=stack.url, timeout=None) as client:
        t0 = time.monotonic()
        body = chat_body(PROBE, f"probe {i}")
        async with client.stream(
            "POST", "/v1/chat/completions", json=body, headers=stack.headers
        ) as response:
            async for line in response.aiter_lines():
                if first is None and is_content_chunk(line):
                    first = (time.monotonic() - t0) * 1000
    return first


def measure_point(
    stack: Stack,
    concurrency: int,
    *,
    warmup: float,
    window: float,
    timeout: float = 60.0,
    probes: int = 0,
) -> ThroughputPoint:
    counts = [StreamCount() for _ in range(concurrency)]
    # Long enough to outlast the measurement, short enough to plan cheaply: the
    # simulator draws a whole answer up front (100,000 tokens cost it ~50 ms).
    tokens = round(stack.tokens_per_second * (warmup + window + 10))
    bodies = [chat_body(f"{MODEL}+tokens={tokens}", f"stream {i}") for i in range(concurrency)]
    me = psutil.Process()
    got: dict[str, float] = {}
    before: list[int] = []
    after: list[int] = []
    probed: list[float | None] = []

    async def hold() -> None:
        await wait_started(counts, within=warmup, quiet=1.0)
        before.extend(c.tokens for c in counts)
        got["server"], got["client"], got["sim"] = _cpu(stack.server), _cpu(me), _cpu(stack.sim)
        got["t"] = time.monotonic()
        await trio.sleep(window)
        got["server"] = _cpu(stack.server) - got["server"]
        got["client"] = _cpu(me) - got["client"]
        got["sim"] = _cpu(stack.sim) - got["sim"]
        got["t"] = time.monotonic() - got["t"]
        after.extend(c.tokens for c in counts)
        for i in range(probes):
            with trio.move_on_after(PROBE_TIMEOUT):
                probed.append(await _probe(stack, i))
            if len(probed) <= i:
                # Not served in time (the baseline queues it behind the streams its
                # executor cannot take): the rest would wait as long; they count as never.
                probed.extend([None] * (probes - i))
                break
            await trio.sleep(0.1)  # one at a time, apart

    trio.run(
        lambda: run_streams(
            stack.url, bodies, counts, hold=hold, http_timeout=timeout, headers=stack.headers
        )
    )
    deltas = [a - b for a, b in zip(after, before, strict=True)]
    ttft = summarize([c.ttft for c in counts])
    return ThroughputPoint(
        concurrency=concurrency,
        window_s=got["t"],
        tokens=sum(deltas),
        server_cpu_s=got["server"],
        client_cpu_s=got["client"],
        sim_cpu_s=got["sim"],
        served=sum(d > 0 for d in deltas),
        started=ttft.count,
        ttft_p50_s=ttft.p50,
        ttft_p99_s=ttft.p99,
        probe_ttft_ms=tuple(probed),
    )
