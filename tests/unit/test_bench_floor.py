"""benchmarks/floor.py: the minimal ASGI app's answer, and the report of a run."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.floor import raw_app, report


async def test_the_minimal_asgi_app_reads_the_whole_body_then_streams_two_events() -> None:
    body = json.dumps({"m": "hi", "messages": []}).encode()
    parts = [
        {"type": "http.request", "body": body[:5], "more_body": True},
        {"type": "http.request", "body": body[5:], "more_body": False},
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return parts.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await raw_app({"type": "http"}, receive, send)
    assert parts == []
    assert [m["type"] for m in sent] == [
        "http.response.start",
        "http.response.body",
        "http.response.body",
    ]
    assert sent[0]["status"] == 200
    assert [m["body"] for m in sent[1:]] == [b'data: "hi"\n\n', b"data: [DONE]\n\n"]
    assert [m["more_body"] for m in sent[1:]] == [True, False]


def test_the_report_gives_each_paths_p50_p90_and_missing_and_the_overhead() -> None:
    text = report({"direct": [2.0, None, 3.0], "gateway": [5.0, 6.0, 7.0]})
    lines = text.splitlines()
    assert "| the simulator, called directly | 2.50 | 3.00 | 1 |" in lines
    assert "| through the gateway | 6.00 | 7.00 | 0 |" in lines
    assert lines[-1] == "TTFT overhead (gateway p50 - direct p50): 3.50 ms"


def test_the_report_leaves_out_the_overhead_without_both_paths() -> None:
    assert "overhead" not in report({"raw": [1.0, 2.0]})
