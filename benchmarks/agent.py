"""Agent benchmark: a supersede during a tool call. How soon is the call cancelled at the
MCP server, and how soon does B get its first token?

Real processes on loopback: a gateway with the embedded model (``--backend sim``)
and one stdio MCP server, :mod:`benchmarks.mcp_slow`, which logs when it gets a
call and when that call is cancelled (``time.monotonic()``: on Linux one clock
for every process). ``trio`` is ``jarvis-trio serve`` (agent mode,
:mod:`jarvis_trio.agent`); ``asyncio`` is the baseline
(:mod:`benchmarks.asyncio_variant.agent`), whose stream cancels its
``agent_task`` and waits 0.5 s for it, as the original notes did.

Each round, in a fresh session:

1. A is an agent request, ``use slow {"seconds": 30}``: the embedded model calls
   the tool; we wait until the MCP server has logged the call.
2. At ``t_b`` we send B (a plain prompt) in the same session.
3. Measured from ``t_b``: the MCP server's ``cancelled`` line for A's call, and
   B's first content chunk at the client. The model answers at 1,000 tokens/s,
   so B's first token is the handoff, not the model's pace.

Each round opens new connections for A and B. On a kept-alive connection the asyncio
variant's B answer reaches this client about 40 ms late, in every round after the first
(uvicorn's h11 server with httpx's client; its server log has B's stream started 1 ms
after A's cancel and ended 5 ms later): a TCP-level delay of that pairing, not of the
handoff, and the same 40 ms the TTFT phase shows for that variant. New connections keep
it out of both variants' figures.

``python -m benchmarks.agent [--rounds N] [--variants trio,asyncio]`` prints
p50 / p99 / max; ``python -m benchmarks.run --phases agent`` puts it in the report.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from benchmarks.handoff import is_content_chunk, percentiles, until_stuck
from benchmarks.stack import BIN, SERVER_READY
from jarvis_trio.testing import spawn

ROOT = Path(__file__).resolve().parents[1]
SLOW_PROMPT = 'use slow {"seconds": 30}'
SERVER_ENV = {"JARVIS_SIM_TOKENS_PER_SECOND": "1000"}
POLL = 0.002  # s between reads of the MCP server's log


@dataclass
class AgentRound:
    """One supersede during a tool call; ``None`` where it never happened in time."""

    cancel_ms: float | None  # B sent -> the MCP server logged the call's cancel
    ttft_b_ms: float | None  # B sent -> B's first token at the client


class McpLog:
    """The MCP server's log (:mod:`benchmarks.mcp_slow`), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def events(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.endswith("}")]

    def wait(self, match: Callable[[dict[str, Any]], bool], within: float) -> dict[str, Any] | None:
        """The first event ``match`` accepts, polled for ``within`` seconds at most."""
        deadline = time.monotonic() + within
        while True:
            found = next((e for e in self.events() if match(e)), None)
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(POLL)


def mcp_config(folder: Path, log: Path) -> Path:
    config = folder / "mcp.json"
    server = {
        "command": sys.executable,
        "args": ["-m", "benchmarks.mcp_slow"],
        "env": {"BENCH_MCP_LOG": str(log)},
        "cwd": str(ROOT),
    }
    config.write_text(json.dumps({"mcpServers": {"bench": server}}), encoding="utf-8")
    return config


def server_argv(variant: str, config: Path) -> list[str]:
    if variant == "trio":
        head = [str(BIN / "jarvis-trio"), "serve"]
    elif variant == "asyncio":
        head = [sys.executable, "-m", "benchmarks.asyncio_variant"]
    else:
        raise ValueError(f"no variant {variant!r}")
    return [*head, "--port", "0", "--backend", "sim", "--mcp-config", str(config)]


@contextmanager
def open_agent_server(variant: str, *, stop_grace: float = 3.0) -> Iterator[tuple[str, McpLog]]:
    """A fresh gateway with the benchmark's MCP server; its URL and the server's log."""
    with tempfile.TemporaryDirectory(prefix="bench-agent-") as folder:
        log = Path(folder) / "mcp.jsonl"
        argv = server_argv(variant, mcp_config(Path(folder), log))
        with spawn(argv, SERVER_READY, env=SERVER_ENV, stop_grace=stop_grace) as server:
            yield server.url, McpLog(log)


def one_round(url: str, log: McpLog, i: int, timeout: float) -> AgentRound:
    """One round, on new connections (see the module's note on keep-alive)."""
    with (
        httpx.Client(base_url=url, timeout=timeout) as client_a,
        httpx.Client(base_url=url, timeout=timeout) as client_b,
    ):
        return _round(client_a, client_b, log, i, timeout)


def _round(
    client_a: httpx.Client, client_b: httpx.Client, log: McpLog, i: int, timeout: float
) -> AgentRound:
    session = {"X-Session-Id": f"bench-agent-{i}"}
    a_body = {
        "messages": [{"role": "user", "content": SLOW_PROMPT}],
        "stream": True,
        "jarvis": {"agent": True},
    }
    b_body = {"messages": [{"role": "user", "content": "B"}], "stream": True, "max_tokens": 3}
    seen = {e["id"] for e in log.events() if e["event"] == "call"}
    call: dict[str, Any] | None = None
    t_b = ttft = None
    try:
        with client_a.stream(
            "POST", "/v1/chat/completions", json=a_body, headers=session, timeout=timeout
        ) as a:
            lines = a.iter_lines()  # kept referenced: a collected one closes the connection
            call = log.wait(lambda e: e["event"] == "call" and e["id"] not in seen, timeout)
            if call is None:
                return AgentRound(None, None)
            t_b = time.monotonic()
            with client_b.stream(
                "POST", "/v1/chat/completions", json=b_body, headers=session, timeout=timeout
            ) as b:
                b_lines = b.iter_lines()
                if any(is_content_chunk(line) for line in b_lines):
                    ttft = time.monotonic() - t_b
                for _ in b_lines:
                    pass
            for _ in lines:  # A's superseded ending
                pass
    except httpx.TimeoutException:
        pass
    if call is None or t_b is None:
        return AgentRound(None, None)
    call_id = call["id"]
    cancelled = log.wait(lambda e: e["event"] == "cancelled" and e["id"] == call_id, timeout)
    return AgentRound(
        cancel_ms=(cancelled["t"] - t_b) * 1000 if cancelled is not None else None,
        ttft_b_ms=ttft * 1000 if ttft is not None else None,
    )


def run_rounds(
    url: str,
    log: McpLog,
    rounds: int,
    timeout: float,
    give_up_after: int,
    on_round: Callable[[], None] | None = None,
) -> list[AgentRound]:
    """Up to ``rounds`` rounds; stops after ``give_up_after`` in a row without a B."""
    return until_stuck(
        rounds,
        lambda i: one_round(url, log, i, timeout),
        lambda r: r.ttft_b_ms is not None,
        give_up_after,
        on_round,
    )


def measure_agent(
    variant: str,
    rounds: int,
    timeout: float,
    give_up_after: int,
    *,
    stop_grace: float = 3.0,
    on_round: Callable[[], None] | None = None,
) -> list[AgentRound]:
    with open_agent_server(variant, stop_grace=stop_grace) as (url, log):
        return run_rounds(url, log, rounds, timeout, give_up_after, on_round)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--variants", default="trio,asyncio", help="trio, asyncio or both")
    parser.add_argument("--round-timeout", type=float, default=5.0)
    parser.add_argument("--give-up-after", type=int, default=3, help="rounds without a B")
    args = parser.parse_args(argv)
    print("| variant | measure | p50 / p99 / max (ms) | never |")
    print("|---|---|---|---|")
    for variant in args.variants.split(","):
        done = measure_agent(variant, args.rounds, args.round_timeout, args.give_up_after)
        for name, values in (
            ("B sent -> MCP call cancelled", [r.cancel_ms for r in done]),
            ("B's first token", [r.ttft_b_ms for r in done]),
        ):
            never = sum(v is None for v in values)
            print(f"| {variant} | {name} | {percentiles(values)} | {never} of {len(done)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
