"""Scale-out benchmark: tokens/s with one and two hypercorn workers, and handoff latency.

Real processes on loopback: redis-server (no persistence, a free port), the Ollama
simulator (``jarvis-trio sim-ollama``), and ``hypercorn -k trio -w N`` serving
``jarvis_trio.asgi:app`` with ``--backend ollama``; this process is the client.

1. **Throughput.** ``--streams`` clients each loop for ``--seconds``: a streaming
   request with a session of its own (so every request takes a generation, a lease,
   renews and releases it), ``--tokens`` tokens long, from a simulator fast enough
   that the gateway is the bottleneck. Counted: content chunks received per second,
   for ``-w 1`` without a registry (the in-memory default), ``-w 1`` with Redis and
   ``-w 2`` with Redis. The client reads raw sockets and only counts bytes, so it
   takes as little of the machine's CPU as it can; it still shares the cores with
   the servers. Each gateway runs ``--repeat`` times, interleaved, and the median
   is reported (the machine may be shared).
2. **Handoff.** With ``-w 2`` and Redis: A streams in a fresh session; after its
   first token B is sent on a new connection (the kernel picks the worker); timed
   from sending B to B's first content chunk, split by whether B landed on A's
   worker (``X-Jarvis-Worker``) or on the other one.

Usage: ``python -m benchmarks.scaleout [--seconds S] [--streams N] [--rounds R]
[--markdown FILE]``. Bounded: every phase has a fixed duration or round count and
every request a timeout.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import trio

from jarvis_trio.testing import free_port, hypercorn_argv, redis_argv, running_process

BIN = Path(sys.executable).parent
MODEL = "llama3.2:1b"
CONTENT = b'{"content":'
DONE = b"data: [DONE]"


@dataclass(frozen=True)
class Throughput:
    label: str
    tokens: int
    seconds: float
    requests: int

    @property
    def per_second(self) -> float:
        return self.tokens / self.seconds


@contextmanager
def gateway(workers: int, env: dict[str, str]) -> Iterator[str]:
    """``hypercorn -w N`` on a free port, once every worker answers (bounded)."""
    argv = [*hypercorn_argv(workers, free_port()), "jarvis_trio.asgi:app"]
    with running_process(argv, r"Running on (http://127\.0\.0\.1:\d+)", env=env) as url:
        seen: set[str] = set()
        # Each fresh connection may land on either worker; 200 tries are plenty.
        for i in range(200):
            with httpx.Client(base_url=url, timeout=5) as client:
                r = client.post(
                    "/v1/chat/completions",
                    json={"model": MODEL + "+tokens=1", "prompt": "warm-up"},
                    headers={"X-Session-Id": f"warm-{i}"},
                )
            seen.add(r.headers.get("X-Jarvis-Worker", str(r.status_code)))
            if len(seen) >= workers and r.status_code == 200:
                break
            time.sleep(0.02)
        else:
            raise RuntimeError(f"only {len(seen)} of {workers} workers answered")
        yield url


@dataclass
class Counter:
    tokens: int = 0
    requests: int = 0


async def _stream_once(port: int, session: str, tokens: int, counter: Counter) -> None:
    """One streaming request; every content chunk is counted as it arrives, so a
    request cut by the end of the phase still counts what it received."""
    body = (
        '{"model":"%s+tokens=%d","prompt":"load","stream":true}' % (MODEL, tokens)  # noqa: UP031
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Session-Id: {session}\r\nConnection: close\r\n\r\n"
    ).encode()
    tail = b""
    checked = False
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head + body)
        # hypercorn keeps the connection open after the last chunk even with
        # ``Connection: close``: the answer ends at ``[DONE]``.
        while True:
            data = await stream.receive_some(65536)
            if not data:
                break
            if not checked:
                if not data.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"the gateway answered {data[:200]!r}")
                checked = True
            window = tail + data
            counter.tokens += window.count(CONTENT) - tail.count(CONTENT)
            if DONE in window:
                counter.requests += 1
                break
            tail = window[-len(DONE) :]


async def _load(port: int, streams: int, seconds: float, tokens: int) -> tuple[Counter, float]:
    counter = Counter()
    started = trio.current_time()
    end = started + seconds

    async def client(i: int) -> None:
        n = 0
        while trio.current_time() < end:  # bounded by the phase's duration
            with trio.move_on_at(end):
                await _stream_once(port, f"load-{i}-{n}", tokens, counter)
            n += 1

    with trio.fail_after(seconds + 30):
        async with trio.open_nursery() as nursery:
            for i in range(streams):
                nursery.start_soon(client, i)
    return counter, trio.current_time() - started


def throughput(label: str, url: str, streams: int, seconds: float, tokens: int) -> Throughput:
    port = int(url.rsplit(":", 1)[1])
    counter, elapsed = trio.run(_load, port, streams, seconds, tokens)
    return Throughput(label, counter.tokens, elapsed, counter.requests)


@dataclass(frozen=True)
class Handoff:
    cross: bool
    ttft_ms: float


def _first_token(lines: Iterator[str]) -> bool:
    return any('"content":"' in line and '"content":""' not in line for line in lines)


def handoff_round(url: str, i: int) -> Handoff | None:
    session = {"X-Session-Id": f"handoff-{i}"}
    a_body = {"model": MODEL + "+tokens=100000", "prompt": f"A {i}", "stream": True}
    b_body = {"model": MODEL + "+tokens=3", "prompt": f"B {i}", "stream": True}
    with (
        httpx.Client(base_url=url, timeout=10) as client_a,
        httpx.Client(base_url=url, timeout=10) as client_b,
        client_a.stream("POST", "/v1/chat/completions", json=a_body, headers=session) as a,
    ):
        if not _first_token(a.iter_lines()):
            return None
        sent = time.perf_counter()
        with client_b.stream("POST", "/v1/chat/completions", json=b_body, headers=session) as b:
            b_lines = b.iter_lines()
            if not _first_token(b_lines):
                return None
            ttft = (time.perf_counter() - sent) * 1000
            for _ in b_lines:
                pass
        cross = a.headers["X-Jarvis-Worker"] != b.headers["X-Jarvis-Worker"]
    return Handoff(cross, ttft)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    if not values:
        return "no samples"
    return (
        f"{statistics.median(values):.1f} / {pct(values, 0.99):.1f} / {max(values):.1f} ms "
        f"({len(values)} rounds)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scaleout", description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0, help="each throughput phase")
    parser.add_argument("--streams", type=int, default=64, help="concurrent streaming clients")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per request")
    parser.add_argument("--rounds", type=int, default=60, help="handoff rounds")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs per gateway")
    parser.add_argument("--markdown", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]

    with ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory())
        redis_port = free_port()
        stack.enter_context(
            running_process(redis_argv(redis_port, workdir), r"(Ready) to accept connections")
        )
        sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
        sim_argv += ["--tokens-per-second", "2000"]
        sim_url = stack.enter_context(
            running_process(sim_argv, r"ollama_sim listening url=(http://\S+)")
        )
        base = {
            "JARVIS_BACKEND": "ollama",
            "JARVIS_OLLAMA_URL": sim_url,
            "JARVIS_LOG_LEVEL": "warning",
        }
        with_redis = {**base, "JARVIS_REGISTRY_URL": f"redis://127.0.0.1:{redis_port}/0"}
        configs = [
            ("-w 1, in memory", 1, base),
            ("-w 1, Redis", 1, with_redis),
            ("-w 2, Redis", 2, with_redis),
        ]
        runs: dict[str, list[Throughput]] = {label: [] for label, _, _ in configs}
        # Interleaved repeats: the machine is shared, so a burst of other load hits
        # every configuration alike rather than one of them.
        for _ in range(args.repeat):
            for label, workers, env in configs:
                with gateway(workers, env) as url:
                    run = throughput(label, url, args.streams, args.seconds, args.tokens)
                runs[label].append(run)
                print(f"{label}: {run.per_second:,.0f} tokens/s", file=sys.stderr)
        handoffs: list[Handoff] = []
        with gateway(2, with_redis) as url:
            for i in range(args.rounds):
                result = handoff_round(url, i)
                if result is not None:
                    handoffs.append(result)
    rates = {label: [r.per_second for r in rs] for label, rs in runs.items()}
    one, two = statistics.median(rates["-w 1, Redis"]), statistics.median(rates["-w 2, Redis"])
    lines = [
        "# Scale-out benchmark",
        "",
        f"`python -m benchmarks.scaleout` on {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; client, simulator, Redis and every gateway "
        f"worker share the machine (load average {load:.1f} when it started).",
        "",
        f"Throughput: {args.streams} concurrent streaming clients, {args.tokens} tokens "
        f"per request, each request in a session of its own; {args.repeat} runs of "
        f"{args.seconds:g} s per gateway, interleaved.",
        "",
        "| Gateway | tokens/s, median | runs |",
        "|---|---|---|",
        *(
            f"| {label} | {statistics.median(r):,.0f} | " + ", ".join(f"{x:,.0f}" for x in r) + " |"
            for label, r in rates.items()
        ),
        "",
        f"-w 2 against -w 1 (both with Redis): **{two / one:.2f} times** (medians).",
        "",
        "Handoff, -w 2 with Redis: from sending B until B's first token, while A streams "
        "in the same session (p50 / p99 / max):",
        "",
        "| B landed on | B's first token |",
        "|---|---|",
        f"| A's worker | {summary([h.ttft_ms for h in handoffs if not h.cross])} |",
        f"| the other worker | {summary([h.ttft_ms for h in handoffs if h.cross])} |",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown is not None:
        args.markdown.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
