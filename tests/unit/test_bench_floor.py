"""benchmarks/floor.py: the minimal ASGI app's answer, the rounds' order, and the report."""

from __future__ import annotations

import json
from typing import cast

from hypercorn.typing import ASGIReceiveEvent, ASGISendEvent, HTTPRequestEvent, Scope

from benchmarks.floor import raw_app, report, round_order


async def test_the_minimal_asgi_app_reads_the_whole_body_then_streams_two_events() -> None:
    body = json.dumps({"m": "hi", "messages": []}).encode()
    parts: list[HTTPRequestEvent] = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[ASGISendEvent] = []

    async def receive() -> ASGIReceiveEvent:
        return parts.pop(0)

    async def send(message: ASGISendEvent) -> None:
        sent.append(message)

    await raw_app(cast(Scope, {"type": "http"}), receive, send)
    assert parts == []
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    start, head, end = sent
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert head["type"] == end["type"] == "http.response.body"
    assert (head["body"], head["more_body"]) == (b'data: "hi"\n\n', True)
    assert (end["body"], end["more_body"]) == (b"data: [DONE]\n\n", False)


def test_each_round_starts_one_path_later() -> None:
    names = ["direct", "gateway", "quart", "raw"]
    orders = [round_order(names, i) for i in range(5)]
    assert [order[0] for order in orders] == ["direct", "gateway", "quart", "raw", "direct"]
    assert all(sorted(order) == sorted(names) for order in orders)


def test_the_report_gives_each_paths_p50_p90_and_missing_and_the_overhead() -> None:
    text = report({"direct": [2.0, None, 3.0], "gateway": [5.0, 6.0, 7.0]})
    lines = text.splitlines()
    assert "| the simulator, called directly | 2.50 | 3.00 | 1 |" in lines
    assert "| through the gateway | 6.00 | 7.00 | 0 |" in lines
    assert lines[-1] == "TTFT overhead (gateway p50 - direct p50): 3.50 ms"


def test_a_path_with_no_answer_is_reported_as_such_and_no_overhead_without_both() -> None:
    lines = report({"raw": [1.0, 2.0], "gateway": [None, None]}).splitlines()
    assert "| a minimal ASGI app on hypercorn | 1.50 | 2.00 | 0 |" in lines
    assert "| through the gateway | none | none | 2 |" in lines
    assert not any("overhead" in line for line in lines)
