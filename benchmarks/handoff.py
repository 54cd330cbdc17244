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
- ``B time to first token``: B's first content chunk at the client minus ``t_b``.

Usage: ``python -m benchmarks.handoff [--rounds N] [--markdown FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from jarvis_trio.testing import running_process

BIN = Path(sys.executable).parent
MODEL = "llama3.2:1b"


@dataclass
class Round:
    eof_ms: float
    upstream_b_ms: float
    ttft_b_ms: float


def one_round(client: httpx.Client, sim: httpx.Client, i: int, mode: str) -> Round:
    session = {"X-Session-Id": f"bench-{mode}-{i}"}
    fault = "+stall_after=1" if mode == "silent" else "+tokens=100000"
    a_body = {
        "model": MODEL + fault,
        "messages": [{"role": "user", "content": f"A {i}"}],
        "stream": True,
    }
    b_body = {
        **a_body,
        "model": MODEL + "+tokens=3",
        "messages": [{"role": "user", "content": "B"}],
    }
    sim.post("/_sim/reset")
    with client.stream("POST", "/v1/chat/completions", json=a_body, headers=session) as a:
        lines = a.iter_lines()
        for line in lines:  # the role chunk, then A's first token
            if '"content":"' in line and '"content":""' not in line:
                break
        if mode == "silent":
            time.sleep(0.02)  # A's model has gone quiet
        t_b = time.monotonic()
        with client.stream("POST", "/v1/chat/completions", json=b_body, headers=session) as b:
            b_lines = b.iter_lines()
            for line in b_lines:
                if '"content":"' in line and '"content":""' not in line:
                    ttft = time.monotonic() - t_b
                    break
            for _ in b_lines:
                pass
        for _ in lines:  # A's superseded ending
            pass
    records = sim.get("/_sim/connections").json()
    chats = [r for r in records if any(q["path"] == "/api/chat" for q in r["requests"])]
    a_conn = next(r for r in chats if r["requests"][0]["model"] == a_body["model"])
    b_req = next(q for r in chats for q in r["requests"] if q["model"] == b_body["model"])
    assert a_conn["closed"] is not None, "A's upstream connection is still open"
    return Round(
        eof_ms=(a_conn["closed"] - t_b) * 1000,
        upstream_b_ms=(b_req["received"] - t_b) * 1000,
        ttft_b_ms=ttft * 1000,
    )


def percentiles(values: list[float]) -> str:
    ordered = sorted(values)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return f"{statistics.median(ordered):.2f} / {p99:.2f} / {ordered[-1]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--markdown", type=Path, help="write the results table here")
    args = parser.parse_args(argv)
    sim_argv = [str(BIN / "jarvis-trio"), "sim-ollama", "--port", "0", "--tokens-per-second", "50"]
    rows: list[str] = []
    with running_process(sim_argv, r"ollama_sim listening url=(\S+)") as sim_url:
        serve = [str(BIN / "jarvis-trio"), "serve", "--port", "0", "--backend", "ollama"]
        serve += ["--ollama-url", sim_url]
        with (
            running_process(serve, r"server_listening url=(\S+)") as url,
            httpx.Client(base_url=url, timeout=30) as client,
            httpx.Client(base_url=sim_url, timeout=30) as sim,
        ):
            for mode in ("silent", "chatty"):
                rounds = [one_round(client, sim, i, mode) for i in range(args.rounds)]
                for name, values in (
                    ("cancel -> upstream EOF", [r.eof_ms for r in rounds]),
                    ("B upstream request", [r.upstream_b_ms for r in rounds]),
                    ("B time to first token", [r.ttft_b_ms for r in rounds]),
                ):
                    rows.append(f"| {mode} | {name} | {percentiles(values)} |")
    table = "\n".join(
        [
            "# Handoff benchmark",
            "",
            "Written by `make bench` (`benchmarks/handoff.py`). Real processes on loopback:",
            "the Ollama simulator, the gateway (`--backend ollama`) and the client. A streams",
            "and is then silent (a stalled model) or chatty; B arrives in the same session.",
            "Times are from the moment the client sent B, so they include B's HTTP ingress;",
            "A's upstream close and B's upstream request are read from the simulator's records.",
            "",
            f"Rounds: {args.rounds} per upstream. Milliseconds after B was sent: p50 / p99 / max.",
            "",
            "| A's upstream | measure | p50 / p99 / max (ms) |",
            "|---|---|---|",
            *rows,
            "",
            f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
            f"Python {platform.python_version()}, {platform.system()} {platform.release()}.",
        ]
    )
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n", encoding="utf-8")
    print(json.dumps({"rows": rows}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
