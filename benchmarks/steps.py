"""Where one request's time goes, step by step: timestamps inside the gateway.

``python -m benchmarks.steps [--requests N] [--supersede]`` starts the Ollama
simulator and a gateway in which some of jarvis-trio's own functions are wrapped to
note when they run (``time.monotonic()``: one clock for every process on Linux), and
a trio ``Instrument`` counts the scheduler passes. The client sends ``N`` requests,
with a pause of 50 ms after each (the simulator answers 3 tokens, the first 1 ms after
the request). The
table gives, per step, p50 and p90 of the milliseconds since the client began to
send, and the median number of trio scheduler passes since the step before (none is
counted before the first step: that is hypercorn's).

With ``--supersede`` each round is a handoff: A streams in a session, its model goes
silent, and B follows in the same session; times are from the moment B is sent.

Only jarvis-trio's functions are wrapped, and the ASGI ``send`` that hypercorn hands our
app; no other library's: what hypercorn and Quart do lies between the client's send and
the first step, and between the last steps. The wrappers cost a few µs
each. docs/benchmarks.md quotes a run.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.handoff import MODEL, is_content_chunk
from benchmarks.stack import BIN, SERVER_READY, SIM_READY
from benchmarks.stats import percentile
from benchmarks.ttft import time_first
from jarvis_trio.testing import spawn

Mark = tuple[float, str, int]  # (time.monotonic(), step, scheduler passes so far)

# The steps of one request, in order, as (step, what it is).
REQUEST_STEPS = (
    ("app", "our ASGI app is called (hypercorn parsed the request)"),
    ("validated", "the body read and validated"),
    ("started", "the session started the stream"),
    ("worker", "the worker thread runs the request"),
    ("written", "the request (head and body) written to the upstream"),
    ("headers", "the upstream's response headers read"),
    ("line", "the upstream's first line read"),
    ("relayed", "the first piece's wake-up runs on the trio thread (relay)"),
    ("head", "the response's head handed to hypercorn (ASGI send)"),
    ("chunk", "the first chunk handed to hypercorn (ASGI send)"),
    ("sent", "hypercorn's send of the first chunk returns"),
)
SUPERSEDE_STEPS = (
    ("app", "B: our ASGI app is called"),
    ("validated", "B: the body read and validated"),
    ("cancelled", "the session cancels A (`mark_cancelled`, which shuts its socket down)"),
    ("eof", "A's reader thread sees its socket closed"),
    ("ended", "A's stream ends (its thread is done)"),
    ("started", "B's stream started"),
    ("worker", "B's worker thread runs the request"),
    ("written", "B's request written to the upstream"),
)
PAUSE = 0.05  # s between rounds


# -- the server side: `python -m benchmarks.steps serve ...`


def _serve(sim_url: str, marks_path: Path) -> int:
    import trio

    from jarvis_trio import cli
    from jarvis_trio.api import chat, exchange
    from jarvis_trio.backends import transport, upstream
    from jarvis_trio.relay import PieceRelay
    from jarvis_trio.streams import Stream

    marks: list[Mark] = []
    passes = [0]

    def note(step: str) -> None:
        marks.append((time.monotonic(), step, passes[0]))

    def before(owner: Any, name: str, step: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            note(step)
            return inner(*args, **kwargs)

        setattr(owner, name, wrapper)

    def after(owner: Any, name: str, step: str) -> None:
        inner = getattr(owner, name)

        @functools.wraps(inner)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            note(step)
            return result

        setattr(owner, name, wrapper)

    read = transport.SocketStream.read

    @functools.wraps(read)
    def read_noted(self: transport.SocketStream, *args: Any, **kwargs: Any) -> bytes:
        try:
            data = read(self, *args, **kwargs)
        except BaseException:
            note("eof")
            raise
        note("read" if data else "eof")
        return data

    class Passes(trio.abc.Instrument):
        def before_io_wait(self, timeout: float) -> None:
            passes[0] += 1

    app_call = exchange.ExchangeLifetime.__call__
    counting: list[Passes] = []

    @functools.wraps(app_call)
    async def app(self: Any, *args: Any) -> None:
        if not counting:  # the first request (the client's warm-up) is inside trio.run
            counting.append(Passes())
            trio.lowlevel.add_instrument(counting[0])
        note("app")
        scope, receive, send = args

        async def send_noted(message: Any) -> None:
            kind = message.get("type")
            if kind == "http.response.start":
                note("head")
            elif kind == "http.response.body" and message.get("body"):
                note("chunk")
            await send(message)
            if kind == "http.response.body":
                note("sent")

        await app_call(self, scope, receive, send_noted)

    exchange.ExchangeLifetime.__call__ = app  # type: ignore[method-assign,assignment]
    after(chat, "parse_chat_request", "validated")
    before(Stream, "start", "started")
    before(Stream, "mark_cancelled", "cancelled")
    before(Stream, "end", "ended")
    before(upstream.UpstreamBackend, "_chat", "worker")
    after(transport.SocketStream, "write", "written")
    transport.SocketStream.read = read_noted  # type: ignore[method-assign]
    before(PieceRelay, "_wake_pump", "relayed")

    argv = ["serve", "--port", "0", "--backend", "ollama", "--ollama-url", sim_url]
    try:
        return cli.main(argv)
    finally:
        marks_path.write_text(json.dumps(marks))


# -- the client side


@dataclass(frozen=True)
class Round:
    t0: float  # the client began to send (B's, for a supersede)
    first_token_ms: float | None  # since t0: the client had the first token
    done: float  # the client had the whole answer (B's): the round's steps are before it


def _one(client: httpx.Client, i: int) -> Round:
    body = {
        "model": MODEL + "+slow=0.001+tokens=3",
        "messages": [{"role": "user", "content": f"steps {i}"}],
        "stream": True,
    }
    t0 = time.monotonic()
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        first = time_first(r.iter_lines(), t0, is_content_chunk)
    return Round(t0, first, time.monotonic())


def _supersede(client: httpx.Client, i: int) -> Round:
    session = {"X-Session-Id": f"steps-{i}"}
    a_body = {
        "model": MODEL + "+stall_after=1",
        "messages": [{"role": "user", "content": f"A {i}"}],
        "stream": True,
    }
    b_body = {**a_body, "model": MODEL + "+slow=0.001+tokens=3"}
    with client.stream("POST", "/v1/chat/completions", json=a_body, headers=session) as a:
        lines = a.iter_lines()
        if not any(is_content_chunk(line) for line in lines):
            raise RuntimeError("A never streamed")
        time.sleep(0.02)  # A's model has gone quiet
        t0 = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", json=b_body, headers=session) as b:
            first = time_first(b.iter_lines(), t0, is_content_chunk)
        got = Round(t0, first, time.monotonic())
        for _ in lines:  # A's superseded ending
            pass
    return got


def _timeline(
    marks: list[Mark], start: float, end: float, steps: tuple[tuple[str, str], ...]
) -> list[tuple[float, int] | None]:
    """Each step's first mark after the previous step's, within [start, end): (ms since
    ``start``, passes since the step before); None for a step not seen. The headers
    and the first line are the first and second ``read`` after the request's write."""
    window = [m for m in marks if start <= m[0] < end]
    out: list[tuple[float, int] | None] = []
    at, passes = 0, window[0][2] if window else 0
    for step, _ in steps:
        wanted = "read" if step in ("headers", "line") else step
        found = next((k for k in range(at, len(window)) if window[k][1] == wanted), None)
        if found is None:
            out.append(None)
            continue
        while step == "written" and found + 1 < len(window) and window[found + 1][1] == wanted:
            found += 1  # the head, then the body: the request is written with the last
        t, _, count = window[found]
        out.append(((t - start) * 1000, count - passes))
        at, passes = found + 1, count
    return out


def measure(requests: int, supersede: bool) -> str:
    steps = SUPERSEDE_STEPS if supersede else REQUEST_STEPS
    one: Callable[[httpx.Client, int], Round] = _supersede if supersede else _one
    with tempfile.TemporaryDirectory(prefix="bench-steps-") as tmp:
        marks_path = Path(tmp) / "marks.json"
        sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0"]
        with spawn(sim_argv, SIM_READY) as sim:
            argv = [sys.executable, "-m", "benchmarks.steps", "serve", sim.url, str(marks_path)]
            with spawn(argv, SERVER_READY) as server:
                rounds: list[Round] = []
                with httpx.Client(base_url=server.url, timeout=10.0) as client:
                    one(client, -1)  # warm-up, not counted
                    for i in range(requests):
                        rounds.append(one(client, i))
                        time.sleep(PAUSE)
        if not marks_path.exists():
            raise RuntimeError("the gateway did not exit cleanly: it wrote no timestamps")
        marks = [(float(t), str(s), int(c)) for t, s, c in json.loads(marks_path.read_text())]
    rows = []
    # A round's window ends when its client had the whole answer: the next round's
    # marks (a supersede's next A comes right after) are never taken for a missing step.
    timelines = [_timeline(marks, r.t0, r.done, steps) for r in rounds]
    for k, (_, what) in enumerate(steps):
        seen = [t[k] for t in timelines if t[k] is not None]
        if not seen:
            rows.append(f"| {what} | not seen | |")
            continue
        ms = [s[0] for s in seen if s is not None]
        counts = [s[1] for s in seen if s is not None]
        rows.append(
            f"| {what} | {percentile(ms, 0.5):.2f} / {percentile(ms, 0.9):.2f} "
            f"| {statistics.median(counts):g} |"
        )
    firsts = [r.first_token_ms for r in rounds if r.first_token_ms is not None]
    if firsts:
        rows.append(
            f"| the client has the first token | {percentile(firsts, 0.5):.2f} "
            f"/ {percentile(firsts, 0.9):.2f} | |"
        )
    head = [
        f"{len(rounds)} {'handoffs' if supersede else 'requests'}, "
        f"a pause of {PAUSE * 1000:.0f} ms after each",
        "",
        "| step | ms since the client sent (p50 / p90) | scheduler passes since the step before |",
        "|---|---|---|",
    ]
    return "\n".join(head + rows)


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["serve"]:
        return _serve(args[1], Path(args[2]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=positive, default=50)
    parser.add_argument("--supersede", action="store_true", help="B superseding a silent A")
    parsed = parser.parse_args(args)
    print(measure(parsed.requests, parsed.supersede))
    return 0


if __name__ == "__main__":
    sys.exit(main())
