"""Viewers (``GET /v1/sessions/{id}/stream``) and resumable streams, on real hypercorn.

A viewer replays what a session's newest stream sent, then follows it live; it
never counts as a request and never cancels anything. A stream sent with
``X-Jarvis-Resume-Seconds`` survives its client leaving for that long, so a
refreshed page can re-attach.
"""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import pytest

from jarvis_trio.api.sse import viewer_body
from jarvis_trio.backends.sim import MODEL_ID, sim_pieces
from jarvis_trio.generation import ChatTurn, GenerationRequest
from jarvis_trio.replay import MAX_VIEWERS, ReplayLog
from tests.conftest import RunningServer, StartServer, log_lines
from tests.support.helpers import (
    deadline,
    eventually,
    outcome_of,
    read_all_events,
    sse_events,
    sse_events_with_ids,
    text_of,
)

CHAT = "/v1/chat/completions"
ESSAY = "Long essay about AI"


def body(prompt: str = ESSAY, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}], "stream": True, **extra}


def full_answer(prompt: str = ESSAY, max_tokens: int | None = None) -> str:
    request = GenerationRequest(model=MODEL_ID, messages=(ChatTurn("user", prompt),))
    pieces = list(sim_pieces(request))
    return "".join(pieces[:max_tokens])


async def event_ids(response: httpx.Response) -> list[tuple[str | None, Any]]:
    """(SSE id or None, parsed data) per event, to the end."""
    return [event async for event in sse_events_with_ids(response)]


@deadline(20)
async def test_a_viewer_replays_then_follows_and_sees_what_the_client_saw(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Session-Id": "watch-1"}
    async with client.stream("POST", CHAT, json=body(max_tokens=60), headers=headers) as r:
        events = sse_events(r)
        for _ in range(6):  # the role chunk and five pieces first
            await events.__anext__()
        async with client.stream("GET", "/v1/sessions/watch-1/stream") as viewer:
            assert viewer.status_code == 200
            assert viewer.headers["x-stream-id"] == r.headers["x-stream-id"]
            rest = [event async for event in events]
            watched = await event_ids(viewer)
    stream_id = r.headers["x-stream-id"]
    ids = [event_id for event_id, _ in watched]
    datas = [data for _, data in watched]
    assert datas[0]["jarvis"] == {"viewer": True, "replay_truncated": False}
    assert text_of(datas) == full_answer(max_tokens=60)
    assert ids[:-2] == [f"{stream_id}:{n}" for n in range(61)]
    assert datas[-2]["choices"][0]["finish_reason"] == "length"
    assert datas[-1] == "[DONE]"
    assert rest[-1:] == ["[DONE]"], rest
    assert not any(line.startswith("stream_cancelled") for line in log_lines(caplog))


@deadline(20)
async def test_last_event_id_resumes_after_that_event(client: httpx.AsyncClient) -> None:
    headers = {"X-Session-Id": "watch-2"}
    async with client.stream("POST", CHAT, json=body(max_tokens=30), headers=headers) as r:
        primary = await event_ids(r)
    stream_id = r.headers["x-stream-id"]
    assert [i for i, _ in primary][:3] == [f"{stream_id}:0", f"{stream_id}:1", f"{stream_id}:2"]
    resume = {"Last-Event-ID": f"{stream_id}:10"}
    async with client.stream("GET", "/v1/sessions/watch-2/stream", headers=resume) as viewer:
        watched = await event_ids(viewer)
    assert watched[0][0] == f"{stream_id}:11"  # no role chunk, no piece seen twice
    pieces = full_answer(max_tokens=30)
    assert text_of([d for _, d in primary[:11]]) + text_of([d for _, d in watched]) == pieces
    # Another stream's id (or garbage) replays from the start.
    stale = {"Last-Event-ID": "chatcmpl-other:10"}
    async with client.stream("GET", "/v1/sessions/watch-2/stream", headers=stale) as viewer:
        again = await event_ids(viewer)
    assert again[0][0] == f"{stream_id}:0" and text_of([d for _, d in again]) == pieces


@deadline(20)
async def test_viewers_never_cancel_or_hold_anything(
    server: RunningServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Session-Id": "watch-3"}
    async with client.stream("POST", CHAT, json=body(), headers=headers) as a:
        a_events = sse_events(a)
        await a_events.__anext__()
        # A viewer that comes and goes changes nothing.
        async with client.stream("GET", "/v1/sessions/watch-3/stream") as viewer:
            await sse_events(viewer).__anext__()
        assert server.manager.statistics().live_streams == 1
        listed = (await client.get("/v1/requests")).json()["data"]
        assert [r["state"] for r in listed] == ["live"]
        # A viewer that stays sees A superseded by B, like A's own client.
        async with client.stream("GET", "/v1/sessions/watch-3/stream") as viewer:
            b = await client.post(CHAT, json=body("What is 2+2?", stream=False), headers=headers)
            assert b.status_code == 200
            watched = await read_all_events(viewer)
        a_rest = [event async for event in a_events]
    assert outcome_of(watched[-2]) == "superseded"
    assert outcome_of(a_rest[-2]) == "superseded"
    cancels = [line for line in log_lines(caplog) if line.startswith("stream_cancelled")]
    assert cancels == [f"stream_cancelled trace={a.headers['x-stream-id']} reason=superseded"]
    # The newest stream (B, finished) is what a viewer gets now.
    async with client.stream("GET", "/v1/sessions/watch-3/stream") as viewer:
        assert viewer.headers["x-stream-id"] == b.headers["x-stream-id"]
        assert (
            text_of(await read_all_events(viewer)) == b.json()["choices"][0]["message"]["content"]
        )


@deadline(20)
async def test_a_resumable_stream_survives_its_client_and_a_viewer_gets_the_rest(
    server: RunningServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Session-Id": "resume-1", "X-Jarvis-Resume-Seconds": "10"}
    seen: list[tuple[str | None, Any]] = []
    async with client.stream("POST", CHAT, json=body(max_tokens=80), headers=headers) as r:
        events = sse_events_with_ids(r)
        async for event in events:
            seen.append(event)
            if len(seen) == 6:
                break
    # The client is gone mid-answer; the stream is detached, not cancelled.
    stream_id = r.headers["x-stream-id"]
    await eventually(lambda: any("stream_detached" in line for line in log_lines(caplog)))
    last_id = seen[-1][0]
    assert last_id == f"{stream_id}:5"
    resume = {"Last-Event-ID": last_id}
    async with client.stream("GET", "/v1/sessions/resume-1/stream", headers=resume) as viewer:
        rest = await read_all_events(viewer)
    assert text_of([d for _, d in seen]) + text_of(rest) == full_answer(max_tokens=80)
    assert rest[-2]["choices"][0]["finish_reason"] == "length"
    lines = log_lines(caplog)
    assert not any(line.startswith("stream_cancelled") for line in lines)
    assert any(
        line.startswith(f"stream_end trace={stream_id}") and "outcome=completed" in line
        for line in lines
    )
    assert server.manager.statistics().live_streams == 0


@deadline(20)
async def test_a_detached_stream_nobody_watches_is_cancelled_after_its_grace(
    server: RunningServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"X-Session-Id": "resume-2", "X-Jarvis-Resume-Seconds": "0.3"}
    async with client.stream("POST", CHAT, json=body(), headers=headers) as r:
        events = sse_events(r)
        await events.__anext__()
        await events.__anext__()
    stream_id = r.headers["x-stream-id"]
    ended = f"stream_end trace={stream_id}"
    await eventually(lambda: any(line.startswith(ended) for line in log_lines(caplog)))
    lines = log_lines(caplog)
    order = [line.split()[0] for line in lines if stream_id in line]
    assert order == [
        "stream_start",
        "stream_detached",
        "stream_unwatched",
        "stream_cancelled",
        "stream_end",
    ]
    assert f"stream_cancelled trace={stream_id} reason=disconnected" in lines
    # Its output stays available (retained) with its ending.
    async with client.stream("GET", "/v1/sessions/resume-2/stream") as viewer:
        watched = await read_all_events(viewer)
    assert outcome_of(watched[-2]) == "disconnected"


@deadline(20)
async def test_without_the_header_a_disconnect_still_cancels_at_once(
    server: RunningServer, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async with client.stream("POST", CHAT, json=body(), headers={"X-Session-Id": "nr"}) as r:
        events = sse_events(r)
        await events.__anext__()
    await eventually(lambda: server.manager.statistics().live_streams == 0)
    stream_id = r.headers["x-stream-id"]
    assert f"stream_cancelled trace={stream_id} reason=disconnected" in log_lines(caplog)
    assert not any("stream_detached" in line for line in log_lines(caplog))


@pytest.mark.parametrize("value", ["abc", "-1", "61", "nan", "inf", "1" * 40, ""])
@deadline(20)
async def test_a_bad_resume_header_is_a_400(client: httpx.AsyncClient, value: str) -> None:
    headers = {"X-Session-Id": "bad-resume", "X-Jarvis-Resume-Seconds": value}
    r = await client.post(CHAT, json=body(), headers=headers)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "invalid_header"
    assert r.json()["error"]["param"] == "X-Jarvis-Resume-Seconds"


@deadline(20)
async def test_resuming_needs_a_session_and_a_stream(client: httpx.AsyncClient) -> None:
    resume = {"X-Jarvis-Resume-Seconds": "5"}
    r = await client.post(CHAT, json=body(), headers=resume)
    assert r.status_code == 400 and "X-Session-Id" in r.json()["error"]["message"]
    r = await client.post(CHAT, json=body(stream=False), headers={**resume, "X-Session-Id": "s"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_header"


@deadline(20)
async def test_watching_a_session_with_nothing_is_a_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/sessions/never-used/stream")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "no_stream"
    r = await client.get("/v1/sessions/bad%20id/stream")
    assert r.status_code == 400


@deadline(20)
async def test_one_key_cannot_watch_another_keys_session(start_server: StartServer) -> None:
    server = await start_server(api_keys=("key-a", "key-b"))
    async with server.client(headers={"Authorization": "Bearer key-a"}) as a:
        done = await a.post(CHAT, json=body("hi", stream=False), headers={"X-Session-Id": "mine"})
        assert done.status_code == 200
        assert (await a.get("/v1/sessions/mine/stream")).status_code == 200
    async with server.client(headers={"Authorization": "Bearer key-b"}) as b:
        r = await b.get("/v1/sessions/mine/stream")
        assert r.status_code == 404
    async with server.client() as anonymous:
        assert (await anonymous.get("/v1/sessions/mine/stream")).status_code == 401


@deadline(20)
async def test_the_chat_page_and_its_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'data-testid="prompt-input"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for name, kind in [
        ("chat.js", "text/javascript"),
        ("chat.css", "text/css"),
        ("markdown.js", "text/javascript"),
        ("vendor/marked.esm.js", "text/javascript"),
        ("vendor/purify.es.mjs", "text/javascript"),  # a module needs a JS type
        ("vendor/highlight/languages/python.min.js", "text/javascript"),
    ]:
        asset = await client.get(f"/static/{name}")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in asset.headers["content-security-policy"]
    # Only the page's own files: not the package's Python beside them, nor the licences.
    for name in (
        "__init__.py",
        "secret.py",
        "..%2Fapp.py",
        "vendor/../__init__.py",
        "vendor/README.md",
        "vendor/LICENSE-marked.txt",
        "index.html/x",
    ):
        missing = await client.get(f"/static/{name}")
        assert missing.status_code == 404, name
        assert missing.json()["error"]["code"] == "not_found"


@deadline(20)
async def test_head_answers_the_headers_and_holds_nothing(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    """Found in review: Quart runs a GET body for HEAD, which held a viewer's place."""
    headers = {"X-Session-Id": "head-1", "X-Request-Id": "req-head-1"}
    async with client.stream("POST", CHAT, json=body(), headers=headers) as r:
        events = sse_events(r)
        await events.__anext__()
        head = await client.head("/v1/sessions/head-1/stream")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["x-stream-id"] == r.headers["x-stream-id"]
        assert head.headers["x-stream-request-id"] == "req-head-1"
        log = server.manager.watch("anonymous", "head-1")
        assert log is not None and log.viewers == 0


@deadline(20)
async def test_a_stream_takes_a_bounded_number_of_viewers(
    server: RunningServer, client: httpx.AsyncClient
) -> None:
    async with client.stream("POST", CHAT, json=body(), headers={"X-Session-Id": "many"}) as r:
        events = sse_events(r)  # kept referenced: a collected one would close the connection
        await events.__anext__()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(MAX_VIEWERS):
                viewer = await stack.enter_async_context(
                    client.stream("GET", "/v1/sessions/many/stream")
                )
                assert viewer.status_code == 200
            refused = await client.get("/v1/sessions/many/stream")
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_viewers"
        # Each viewer's place is given back when its exchange ends.
        await eventually(lambda: (server.manager.watch("anonymous", "many") or _NoLog).viewers == 0)
        again = await client.head("/v1/sessions/many/stream")
        assert again.status_code == 200


class _NoLog:
    viewers = -1


@deadline(20)
async def test_resuming_past_the_bound_replays_what_is_kept_and_says_so(
    start_server: StartServer,
) -> None:
    """Found in review: a resume whose next pieces were dropped left a silent gap."""
    server = await start_server(replay_buffer_chars=10 * 64)  # ten (short) pieces
    async with server.client() as client:
        done = await client.post(CHAT, json=body(max_tokens=40), headers={"X-Session-Id": "bound"})
        stream_id = done.headers["x-stream-id"]
        resume = {"Last-Event-ID": f"{stream_id}:3"}
        async with client.stream("GET", "/v1/sessions/bound/stream", headers=resume) as viewer:
            watched = await event_ids(viewer)
    assert watched[0][0] == f"{stream_id}:0"
    assert watched[0][1]["jarvis"] == {"viewer": True, "replay_truncated": True}
    assert [i for i, _ in watched[1:-2]] == [f"{stream_id}:{n}" for n in range(31, 41)]


async def test_a_viewer_that_falls_behind_the_bound_gets_an_error_not_a_gap() -> None:
    log = ReplayLog("chatcmpl-1", "m", 1, limit_chars=10 * 64)
    log.append("a")
    viewer = viewer_body(log, 0)
    assert '"role":"assistant"' in await viewer.__anext__()
    assert '"content":"a"' in await viewer.__anext__()
    for i in range(30):  # the viewer reads nothing while thirty pieces go by
        log.append(str(i))
    event = await viewer.__anext__()
    assert '"code":"viewer_fell_behind"' in event and event.endswith("data: [DONE]\n\n")
    with pytest.raises(StopAsyncIteration):
        await viewer.__anext__()
