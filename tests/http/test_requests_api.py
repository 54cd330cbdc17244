"""GET /v1/requests and POST /v1/requests/{id}/cancel: the caller's live streams."""

from __future__ import annotations

import trio

from tests.conftest import RunningServer, StartServer
from tests.support.fakes import FakeBackend
from tests.support.helpers import deadline, eventually, outcome_of, sse_events

CHAT = "/v1/chat/completions"
LONG = {"prompt": "Long essay about AI", "stream": True}


@deadline(20)
async def test_list_and_cancel_by_stream_id(server: RunningServer) -> None:
    async with server.client() as client, server.client() as admin:
        assert (await admin.get("/v1/requests")).json() == {"object": "list", "data": []}
        async with client.stream(
            "POST", CHAT, json=LONG, headers={"X-Session-Id": "s1", "X-Request-Id": "r1"}
        ) as r:
            events = sse_events(r)
            for _ in range(3):
                await anext(events)
            (entry,) = (await admin.get("/v1/requests")).json()["data"]
            assert entry["id"] == r.headers["x-stream-id"]
            assert entry["session_id"] == "s1"
            assert entry["request_id"] == "r1"
            assert entry["state"] == "live"
            assert entry["tokens"] >= 2
            assert entry["age_seconds"] > 0
            cancel = await admin.post(f"/v1/requests/{entry['id']}/cancel")
            assert cancel.json()["result"] == "finished_cleanly"
            rest = [e async for e in events]
        assert outcome_of(rest[-2]) == "stopped"
        assert (await admin.get("/v1/requests")).json()["data"] == []
        again = await admin.post(f"/v1/requests/{entry['id']}/cancel")
        assert again.json()["result"] == "nothing_live"


@deadline(20)
async def test_a_waiting_request_is_listed_and_cancelled_before_it_starts(
    start_server: StartServer,
) -> None:
    backend = FakeBackend(die_after={"A": 1.0})
    server = await start_server(backend)
    headers = {"X-Session-Id": "w"}
    async with server.client() as ca, server.client() as cb, server.client() as admin:
        async with ca.stream("POST", CHAT, json={"prompt": "A", "stream": True}, headers=headers):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    lambda: cb.post(CHAT, json={"prompt": "B", "stream": True}, headers=headers)
                )
                await eventually(lambda: len(server.manager.requests_of("anonymous")) == 2)
                listed = (await admin.get("/v1/requests")).json()["data"]
                states = {e["state"] for e in listed}
                assert states == {"cancelling", "waiting"}
                waiting = next(e for e in listed if e["state"] == "waiting")
                cancel = await admin.post(f"/v1/requests/{waiting['id']}/cancel")
                assert cancel.json()["result"] == "never_started"
    assert "B" not in backend.starts


@deadline(20)
async def test_one_key_neither_sees_nor_cancels_another_keys_requests(
    start_server: StartServer,
) -> None:
    server = await start_server(api_keys="alice,mallory")
    alice = {"Authorization": "Bearer alice"}
    mallory = {"Authorization": "Bearer mallory"}
    async with server.client() as client, server.client() as other:
        async with client.stream("POST", CHAT, json=LONG, headers=alice) as r:
            events = sse_events(r)
            await anext(events)
            assert (await other.get("/v1/requests", headers=mallory)).json()["data"] == []
            stream_id = r.headers["x-stream-id"]
            cancel = await other.post(f"/v1/requests/{stream_id}/cancel", headers=mallory)
            assert cancel.json()["result"] == "nothing_live"
            mine = (await other.get("/v1/requests", headers=alice)).json()["data"]
            assert [e["id"] for e in mine] == [stream_id]
            assert (await anext(events))["choices"][0]["finish_reason"] is None
