"""Handoff benchmark: how fast does prompt B replace prompt A, and when does A's upstream close?

Real processes on loopback: the Ollama simulator (``jarvis-trio sim-ollama``) and the
gateway (``jarvis-trio serve --backend ollama``); this process is the client. For each
round, in a fresh session:

1. A streams; we read its first token. With ``--upstream silent`` A's model then stalls
   (it sends nothing more, as a loading or stuck model); with ``chatty`` it keeps streaming.
2. At ``t_b`` we send B in the same session and time its first token.
3. From the simulator's records (``time.monotonic()``, one clock for every process on
   Linux) we read when A's upstream connection closed and when B's upstream request came.

Reported, p50 / p99 / max over the rounds:

- ``cancel -> upstream EOF``: A's upstream close minus ``t_b``;
- ``B upstream request``: B's request at the simulator minus ``t_b``;
- ``B time to first token``: B's first content chunk at the client minus ``t_b``
  (B's upstream sends its first token 1 ms after B's request).

Usage: ``python -m benchmarks.handoff [--rounds N] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from benchmarks.stack import Stack, open_stack
from benchmarks.stats import summarize

MODEL = "llama3.2:1b"
MODES = ("silent", "chatty", "stop", "disconnect")


@dataclass
class Round:
    """One handoff; ``None`` where it never happened within the round's timeout."""

    eof_ms: float | None  # A's upstream connection closed
    upstream_b_ms: float | None  # B's request reached the upstream
    ttft_b_ms: float | None  # B's first token reached the client


def is_content_chunk(line: str) -> bool:
    """A line with a token: an SSE chunk of the gateway, or an NDJSON line of the
    simulator (a role chunk's content, and the last line's, is empty)."""
    return '"content":"' in line and '"content":""' not in line


def _first_token(lines: Iterator[str]) -> bool:
    """Read up to the first content chunk (``any`` stops there); False if none came."""
    return any(is_content_chunk(line) for line in lines)


def one_round(client: httpx.Client, sim: httpx.Client, i: int, mode: str, timeout: float) -> Round:
    session_id = f"bench-{mode}-{i}"
    session = {"X-Session-Id": session_id}
    # A chatty A outlasts any round (the simulator plans an answer up front, so it
    # is not made longer than needed); B's model answers at once (1 ms a token), so
    # B's first token measures the handoff, not the simulator's pace.
    fault = "+stall_after=1" if mode == "silent" else "+tokens=5000"
    a_body = {
        "model": MODEL + fault,
        "messages": [{"role": "user", "content": f"A {i}"}],
        "stream": True,
    }
    b_body = {
        **a_body,
        "model": MODEL + "+slow=0.001+tokens=3",
        "messages": [{"role": "user", "content": "B"}],
    }
    t_b = ttft = None
    try:
        with client.stream(
            "POST", "/v1/chat/completions", json=a_body, headers=session, timeout=timeout
        ) as a:
            lines = a.iter_lines()
            if not _first_token(lines):
                return Round(None, None, None)
            if mode == "silent":
                time.sleep(0.02)  # A's model has gone quiet
            t_b = time.monotonic()
            with client.stream(
                "POST", "/v1/chat/completions", json=b_body, headers=session, timeout=timeout
            ) as b:
                b_lines = b.iter_lines()
                if _first_token(b_lines):
                    ttft = time.monotonic() - t_b
                for _ in b_lines:
                    pass
            for _ in lines:  # A's superseded ending
                pass
    except httpx.TimeoutException:
        pass
    if t_b is None:
        return Round(None, None, None)

    def request_of(model: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        for conn in sim.get("/_sim/connections").json():
            for req in conn["requests"]:
                tag = req["headers"].get("x-jarvis-session", "")
                if req["model"] == model and tag.endswith("/" + session_id):
                    return conn, req
        return None

    found_a, found_b = request_of(str(a_body["model"])), request_of(str(b_body["model"]))
    closed = found_a[0]["closed"] if found_a else None
    return Round(
        eof_ms=(closed - t_b) * 1000 if closed is not None else None,
        upstream_b_ms=(found_b[1]["received"] - t_b) * 1000 if found_b else None,
        ttft_b_ms=ttft * 1000 if ttft is not None else None,
    )


def session_marker(session_id: str) -> str:
    """What a client of a gateway without sessions puts in its prompt, so that the
    simulator's records show which session a request belongs to."""
    return f"[{session_id}]"


def in_session(request: dict[str, Any], session_id: str) -> bool:
    """Whether a request of ``/_sim/connections`` belongs to the session: by the
    ``X-Jarvis-Session`` jarvis-trio sends upstream, or by the session's marker in
    the prompt (a gateway without sessions)."""
    if request["headers"].get("x-jarvis-session", "").endswith("/" + session_id):
        return True
    messages = (request.get("body") or {}).get("messages") or []
    marker = session_marker(session_id)
    return any(marker in str(m.get("content", "")) for m in messages if isinstance(m, dict))


def cancel_round(
    client: httpx.Client,
    sim: httpx.Client,
    i: int,
    how: str,
    timeout: float,
    *,
    sessions: bool = True,
) -> Round:
    """A streams, then goes silent; it is stopped (Stop endpoint) or its client leaves.
    Measures when A's upstream connection closed after that. Without ``sessions`` the
    prompt carries the session's marker (:func:`session_marker`)."""
    session_id = f"bench-{how}-{i}"
    prompt = f"A {i}" if sessions else f"A {i} {session_marker(session_id)}"
    body = {
        "model": MODEL + "+stall_after=1",
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    t0 = None
    try:
        with client.stream(
            "POST",
            "/v1/chat/completions",
            json=body,
            headers={"X-Session-Id": session_id},
            timeout=timeout,
        ) as a:
            # Keep the line iterator referenced: when a half-read one is collected,
            # httpcore closes the connection, which would be a disconnect of its own.
            lines = a.iter_lines()
            if not _first_token(lines):
                return Round(None, None, None)
            time.sleep(0.02)  # A's model has gone quiet
            t0 = time.monotonic()
            if how == "stop":
                client.post(f"/v1/sessions/{session_id}/cancel", timeout=timeout)
                for _ in lines:  # A's "stopped" ending
                    pass
        # Leaving the block closes our connection: the disconnect, for how == "disconnect".
    except httpx.TimeoutException:
        pass
    if t0 is None:
        return Round(None, None, None)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # bounded: the simulator records the close
        for conn in sim.get("/_sim/connections").json():
            if conn["closed"] and any(in_session(r, session_id) for r in conn["requests"]):
                return Round((conn["closed"] - t0) * 1000, None, None)
        time.sleep(0.005)
    return Round(None, None, None)


T = TypeVar("T")


def until_stuck(
    rounds: int,
    one: Callable[[int], T],
    served: Callable[[T], bool],
    give_up_after: int,
    on_round: Callable[[], None] | None = None,
) -> list[T]:
    """``one(i)`` for up to ``rounds`` rounds; stops after ``give_up_after`` rounds in a
    row that were not ``served`` (the server no longer serves the session)."""
    done: list[T] = []
    stuck = 0
    for i in range(rounds):
        result = one(i)
        done.append(result)
        if on_round:
            on_round()
        stuck = 0 if served(result) else stuck + 1
        if stuck >= give_up_after:
            break
    return done


@contextmanager
def clients(stack: Stack, timeout: float) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """A client of the gateway (with the stack's headers) and one of the simulator."""
    with (
        httpx.Client(base_url=stack.url, timeout=timeout, headers=stack.headers) as client,
        httpx.Client(base_url=stack.sim_url, timeout=30) as sim,
    ):
        yield client, sim


def forgetting(sim: httpx.Client, on_round: Callable[[], None] | None) -> Callable[[], None]:
    """What to do after each round: the simulator forgets the round's closed
    connections (``POST /_sim/reset``), then ``on_round``. A round reads
    ``/_sim/connections`` while it waits for a close; a listing that grew with every
    round made the simulator slower to see that close, round after round (a
    disconnect's p50 went from 1.3 ms in the first 20 of 200 rounds to 12 ms in the
    last 20)."""

    def after() -> None:
        sim.post("/_sim/reset").raise_for_status()
        if on_round:
            on_round()

    return after


def run_mode(
    stack: Stack,
    mode: str,
    rounds: int,
    timeout: float,
    give_up_after: int,
    on_round: Callable[[], None] | None = None,
) -> list[Round]:
    """Up to ``rounds`` rounds of ``mode`` (one of :data:`MODES`) on ``stack``; stops
    after ``give_up_after`` rounds in a row in which nothing was served."""
    with clients(stack, timeout) as (client, sim):
        if mode in ("silent", "chatty"):
            return until_stuck(
                rounds,
                lambda i: one_round(client, sim, i, mode, timeout),
                lambda r: r.ttft_b_ms is not None,
                give_up_after,
                forgetting(sim, on_round),
            )
        return until_stuck(
            rounds,
            lambda i: cancel_round(client, sim, i, mode, timeout, sessions=stack.sessions),
            lambda r: r.eof_ms is not None,
            give_up_after,
            forgetting(sim, on_round),
        )


def run_variant(
    variant: str, mode: str, rounds: int, timeout: float, give_up_after: int
) -> list[Round]:
    """Fresh simulator and server per variant and mode: a variant's stuck threads
    must not spill into the next measurement."""
    with open_stack(variant) as stack:
        return run_mode(stack, mode, rounds, timeout, give_up_after)


def percentiles(values: list[float | None]) -> str:
    got = summarize(values)
    if got.p50 is None:
        return "never"
    return f"{got.p50:.2f} / {got.p99:.2f} / {got.max:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--variants", default="trio,asyncio", help="trio, asyncio or both")
    parser.add_argument("--round-timeout", type=float, default=5.0)
    parser.add_argument("--give-up-after", type=int, default=5, help="rounds without a B")
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    args = parser.parse_args(argv)
    rows: list[str] = []
    for variant in args.variants.split(","):
        for mode in MODES:
            rounds = run_variant(variant, mode, args.rounds, args.round_timeout, args.give_up_after)
            n = len(rounds)
            measures: tuple[tuple[str, list[float | None]], ...] = (
                ("cancel -> upstream EOF", [r.eof_ms for r in rounds]),
                ("B upstream request", [r.upstream_b_ms for r in rounds]),
                ("B time to first token", [r.ttft_b_ms for r in rounds]),
            )
            if mode in ("stop", "disconnect"):
                measures = ((f"{mode} -> upstream EOF", [r.eof_ms for r in rounds]),)
            for name, values in measures:
                never = sum(v is None for v in values)
                rows.append(
                    f"| {variant} | {mode} | {name} | {percentiles(values)} | {never} of {n} |"
                )
    table = "\n".join(
        [
            "# Handoff benchmark",
            "",
            "Written by `make bench` (`benchmarks/handoff.py`). Real processes on loopback:",
            "the Ollama simulator, a gateway (`--backend ollama`) and the client; `trio` is",
            "jarvis-trio, `asyncio` the original notes' design (`benchmarks/asyncio_variant`).",
            "A streams and is then silent (a stalled model) or chatty; B arrives in the same",
            "session (or, silent too, A is stopped by the Stop endpoint, or its client leaves).",
            "Times are from the moment the client sent B (or the Stop, or closed), so they",
            "include the HTTP ingress; A's upstream close and B's upstream request are read",
            "from the simulator's records. *never*: it did not happen within the round's",
            f"{args.round_timeout:g} s; a variant's run stops after {args.give_up_after} rounds",
            "in a row without a B (its server no longer serves the session).",
            "",
            f"Rounds: up to {args.rounds} per variant and upstream, each on a fresh simulator",
            "and server. Milliseconds: p50 / p99 / max.",
            "",
            "| variant | A's upstream | measure | p50 / p99 / max (ms) | never |",
            "|---|---|---|---|---|",
            *rows,
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}.",
        ]
    )
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
