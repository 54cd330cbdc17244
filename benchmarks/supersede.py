"""Supersede as a client sends it, counted at the simulator: how many generations of one
session are live at once.

Each round, in a fresh session: A streams a long answer; once its first token is in,
the client sends B (a short answer) and reads it to its end, leaving A's response open
and unread, then leaves A. A jarvis-trio client sends both with ``X-Session-Id``; to a
gateway without sessions (the LiteLLM proxy) the header means nothing, and what a
client does there is just that: send the next prompt. Every prompt carries its
session's marker (:func:`benchmarks.handoff.session_marker`), so the simulator's
connection records (``GET /_sim/connections``) tell the session of each upstream
request whichever gateway sent it.

Counted per round, from those records (``time.monotonic()``, one clock for all the
processes): the most generations of the session the simulator was answering at once
(:func:`live_peak`), how many were still being answered when the client had read B's
answer to its end (:func:`live_at`: A, unless the gateway stopped it), and B's first
token at the client from the moment B was sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from benchmarks.handoff import (
    MODEL,
    _first_token,
    clients,
    forgetting,
    in_session,
    session_marker,
    until_stuck,
)
from benchmarks.load import CHAT, chat_body
from benchmarks.stack import Stack

Span = tuple[float, float]  # (received, ended); ended is inf while it is being answered


@dataclass(frozen=True)
class SupersedeRound:
    """One round; ``None`` where A or B never got a token within the round's timeout."""

    live_peak: int | None  # most of the session's generations answered at once
    live_after_b: int | None  # still being answered when B's answer had been read
    ttft_b_ms: float | None


def session_spans(connections: list[dict[str, Any]], session_id: str) -> list[Span]:
    """The generations (``/api/chat`` requests) of a session in ``/_sim/connections``:
    from their arrival to their end, or their connection's close, whichever came first."""
    spans = []
    for conn in connections:
        for request in conn["requests"]:
            if request["path"] != "/api/chat" or not in_session(request, session_id):
                continue
            ends = [t for t in (request["ended"], conn["closed"]) if t is not None]
            spans.append((float(request["received"]), float(min(ends)) if ends else math.inf))
    return spans


def live_at(spans: Sequence[Span], t: float) -> int:
    """How many spans are live at ``t`` (received at or before it, not yet ended)."""
    return sum(start <= t < end for start, end in spans)


def live_peak(spans: Sequence[Span]) -> int:
    """The most spans live at once (an end at the very moment of a start does not overlap)."""
    return max((live_at(spans, start) for start, _ in spans), default=0)


def supersede_round(
    client: httpx.Client, sim: httpx.Client, i: int, timeout: float
) -> SupersedeRound:
    session_id = f"bench-supersede-{i}"
    marker = session_marker(session_id)
    headers = {"X-Session-Id": session_id}
    a_body = chat_body(MODEL + "+tokens=5000", f"A {i} {marker}")  # outlasts the round
    b_body = chat_body(MODEL + "+slow=0.001+tokens=3", f"B {i} {marker}")
    ttft = None
    try:
        with client.stream("POST", CHAT, json=a_body, headers=headers, timeout=timeout) as a:
            lines = a.iter_lines()  # kept referenced: see handoff.cancel_round
            if not _first_token(lines):
                return SupersedeRound(None, None, None)
            t_b = time.monotonic()
            with client.stream("POST", CHAT, json=b_body, headers=headers, timeout=timeout) as b:
                b_lines = b.iter_lines()
                if _first_token(b_lines):
                    ttft = (time.monotonic() - t_b) * 1000
                for _ in b_lines:
                    pass
            b_read = time.monotonic()
            connections = sim.get("/_sim/connections").json()
        # Leaving the block closes A's connection: the client leaves A at last.
    except httpx.TimeoutException:
        return SupersedeRound(None, None, ttft)
    spans = session_spans(connections, session_id)
    return SupersedeRound(live_peak(spans), live_at(spans, b_read), ttft)


def run_supersede(
    stack: Stack,
    rounds: int,
    timeout: float,
    give_up_after: int,
    on_round: Callable[[], None] | None = None,
) -> list[SupersedeRound]:
    """Up to ``rounds`` rounds; stops after ``give_up_after`` rounds in a row without a B
    (the asyncio variant's executor is full of abandoned A's after a few)."""
    with clients(stack, timeout) as (client, sim):
        return until_stuck(
            rounds,
            lambda i: supersede_round(client, sim, i, timeout),
            lambda r: r.ttft_b_ms is not None,
            give_up_after,
            forgetting(sim, on_round),
        )
