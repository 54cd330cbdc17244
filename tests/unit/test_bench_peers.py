"""The pure parts of the peer comparison (``make bench-peers``): the LiteLLM proxy's
config, the session of a simulator record, live generations, the aftermath's last end,
the three-column report. Fast: no process, no socket; results are built by hand."""

from __future__ import annotations

import json
import math
from typing import Any

from benchmarks.aftermath import AftermathResult, last_end
from benchmarks.handoff import Round, in_session, session_marker
from benchmarks.load import TokenCounter
from benchmarks.memory import MemoryResult
from benchmarks.report import (
    BEGIN,
    END,
    PEERS_BEGIN,
    PEERS_END,
    PageContext,
    VariantResults,
    peer_rows,
    render_peers_page,
    replace_generated,
)
from benchmarks.stack import LITELLM_KEY, litellm_config
from benchmarks.supersede import SupersedeRound, live_at, live_peak, session_spans
from benchmarks.throughput import ThroughputPoint
from benchmarks.ttft import TtftResult


def test_litellm_config_routes_every_model_to_the_simulator() -> None:
    config = json.loads(litellm_config("http://127.0.0.1:1234"))  # JSON is YAML
    (route,) = config["model_list"]
    assert route["model_name"] == "*"
    assert route["litellm_params"] == {
        "model": "ollama_chat/*",
        "api_base": "http://127.0.0.1:1234",
    }
    assert config["general_settings"] == {"master_key": LITELLM_KEY}  # no database_url


def test_token_counter_counts_litellm_first_token_in_its_role_chunk() -> None:
    chunks = [
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"buffer"}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{"content":" budget"}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{"content":"\\"q"}}]}\n\n',
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    ]
    body = "".join(chunks).encode()
    for size in (1, 2, 5, 11, 12, len(body)):
        counter = TokenCounter()
        for i in range(0, len(body), size):
            counter.feed(body[i : i + size])
        assert counter.count == 3, size


def _request(session: str | None, content: str, received: float, ended: float | None) -> Any:
    headers = {"x-jarvis-session": f"k/{session}"} if session else {}
    body = {"messages": [{"role": "user", "content": content}]}
    return {
        "path": "/api/chat",
        "headers": headers,
        "body": body,
        "received": received,
        "ended": ended,
    }


def test_a_request_belongs_to_a_session_by_header_or_by_the_prompts_marker() -> None:
    assert in_session(_request("s-1", "A 1", 0.0, None), "s-1")
    assert not in_session(_request("s-10", "A 1", 0.0, None), "s-1")
    assert in_session(_request(None, f"A 1 {session_marker('s-1')}", 0.0, None), "s-1")
    assert not in_session(_request(None, f"A 1 {session_marker('s-10')}", 0.0, None), "s-1")
    assert not in_session({"headers": {}, "body": None}, "s-1")  # /api/show and the like


def test_live_generations_of_a_session() -> None:
    marker = session_marker("s")
    connections: list[dict[str, Any]] = [
        # A: still answered, its connection open
        {"closed": None, "requests": [_request(None, f"A {marker}", 1.0, None)]},
        # B: ended at 2.5, its connection closed later
        {"closed": 3.0, "requests": [_request(None, f"B {marker}", 2.0, 2.5)]},
        # another session, and a request that is not a generation
        {"closed": None, "requests": [_request(None, "C [t]", 1.5, None)]},
        {"closed": 1.2, "requests": [{**_request(None, marker, 1.1, None), "path": "/api/show"}]},
    ]
    spans = session_spans(connections, "s")
    assert sorted(spans) == [(1.0, math.inf), (2.0, 2.5)]
    assert live_peak(spans) == 2
    assert live_at(spans, 2.6) == 1  # A, after B's answer
    assert live_peak([(1.0, 2.0), (2.0, 3.0)]) == 1  # one ends as the next starts
    assert live_peak([]) == 0
    # the connection closed before the request's end was recorded: the close counts
    closed_first = [{"closed": 1.5, "requests": [_request("s", "A", 1.0, None)]}]
    assert session_spans(closed_first, "s") == [(1.0, 1.5)]


def test_last_end_is_the_latest_end_or_close_of_a_generation() -> None:
    connections: list[dict[str, Any]] = [
        {"closed": 9.0, "requests": [_request(None, "x", 1.0, 4.0)]},
        {"closed": 5.0, "requests": [_request(None, "y", 1.0, None)]},
        {"closed": 20.0, "requests": [{**_request(None, "z", 1.0, 19.0), "path": "/api/show"}]},
    ]
    assert last_end(connections) == 5.0
    assert last_end([]) == 0.0


def _variant(name: str, eof: float | None, peak: int, quiet: float | None) -> VariantResults:
    point = ThroughputPoint(100, 2.0, 4000, 1.6, 0.1, 0.1, 100, 100, 0.01, 0.02)
    return VariantResults(
        name,
        handoff={"disconnect": [Round(eof, None, None)] * 4},
        ttft=TtftResult(direct_ms=[2.0] * 5, gateway_ms=[2.0 + 10 * peak] * 5),
        throughput=[point],
        memory=MemoryResult(200, 200, 0, 60 * 2**20, 80 * 2**20, 201),
        supersede=[SupersedeRound(peak, peak - 1, 8.0)] * 3 + [SupersedeRound(None, None, None)],
        aftermath=AftermathResult(200, 150, 120, quiet, 0 if quiet else 7, 3, 30.0),
    )


def test_peer_rows_put_the_three_gateways_side_by_side() -> None:
    results = [
        _variant("trio", 3.0, 1, 0.25),
        _variant("asyncio", None, 2, None),
        _variant("litellm", 5.0, 2, 1.5),
    ]
    rows = {row[0]: row[1:] for row in peer_rows(results)}
    assert rows["Client disconnect → upstream closed (ms)"] == (
        "p50 3.0 / p99 3.0 / max 3.0",
        "never (4 of 4)",
        "p50 5.0 / p99 5.0 / max 5.0",
    )
    two_live = next(v for k, v in rows.items() if k.startswith("Supersede: rounds in which the s"))
    assert two_live == (
        "0 of 3 (1 more without a B)",
        "3 of 3 (1 more without a B)",
        "3 of 3 (1 more without a B)",
    )
    assert rows["TTFT overhead, p50 gateway - p50 direct (ms)"] == ("10.00", "20.00", "20.00")
    assert rows["Server CPU per relayed token at 100 streams (µs)"] == ("400",) * 3
    assert rows["Memory: KiB per held stream"] == ("102",) * 3
    quiet = rows["Overload: clients left → the simulator answered nothing (s)"]
    assert quiet == (
        "0.25",
        "not within 30 s (7 generations still live, 3 connections open)",
        "1.50",
    )

    ctx = PageContext("Results (peer run)", "now", "`peers`", [("CPU", "x")], [], 60.0, "busy")
    page = render_peers_page(ctx, results)
    assert "| measure | jarvis-trio | asyncio variant | LiteLLM proxy |" in page
    assert "> **Warning:** busy" in page
    assert "### Memory" in page


def test_the_peer_part_of_the_page_has_markers_of_its_own() -> None:
    page = f"intro\n{BEGIN}\nold full run\n{END}\n"
    once = replace_generated(page, "peers 1", PEERS_BEGIN, PEERS_END)
    twice = replace_generated(once, "peers 2", PEERS_BEGIN, PEERS_END)
    assert "old full run" in twice and "peers 1" not in twice
    assert twice.count(PEERS_BEGIN) == 1 and twice.endswith(f"peers 2\n{PEERS_END}\n")
    assert replace_generated(twice, "new full run") == twice.replace("old full run", "new full run")
