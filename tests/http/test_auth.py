"""API keys, the loopback-only rule, and sessions scoped per key."""

from __future__ import annotations

import pytest

from jarvis_trio.auth import ANONYMOUS, Authenticator, owner_of_key
from jarvis_trio.errors import AuthenticationFailed, Forbidden
from tests.conftest import StartServer
from tests.support.helpers import deadline, sse_events

CHAT = "/v1/chat/completions"
LONG = {"messages": [{"role": "user", "content": "Long essay about AI"}], "stream": True}


def test_no_keys_means_anonymous_on_loopback_only() -> None:
    auth = Authenticator(())
    assert auth.owner(None, server_host="127.0.0.1", client_host="127.0.0.1") == ANONYMOUS
    assert auth.owner(None, server_host="::1", client_host="::1") == ANONYMOUS
    with pytest.raises(Forbidden):
        auth.owner(None, server_host="10.0.0.5", client_host="10.0.0.9")
    with pytest.raises(Forbidden):
        auth.owner(None, server_host="127.0.0.1", client_host=None)


def test_no_keys_with_explicit_flag_serves_anyone() -> None:
    auth = Authenticator((), allow_unauthenticated=True)
    assert auth.owner(None, server_host="10.0.0.5", client_host="10.0.0.9") == ANONYMOUS


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer ", "Basic devkey", "bearer wrong", "devkey"]
)
def test_missing_or_wrong_keys_are_refused(header: str | None) -> None:
    auth = Authenticator(("devkey", "other"))
    with pytest.raises(AuthenticationFailed):
        auth.owner(header, server_host="127.0.0.1", client_host="127.0.0.1")


def test_each_key_is_its_own_owner() -> None:
    auth = Authenticator(("devkey", "other"))
    local = {"server_host": "127.0.0.1", "client_host": "127.0.0.1"}
    assert auth.owner("Bearer devkey", **local) == owner_of_key("devkey")
    assert auth.owner("bearer  other ", **local) == owner_of_key("other")
    assert owner_of_key("devkey") != owner_of_key("other")


@deadline(20)
async def test_http_auth_with_keys(start_server: StartServer) -> None:
    server = await start_server(api_keys="devkey, second")
    async with server.client() as client:
        r = await client.post(CHAT, json={"prompt": "hi", "max_tokens": 1})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "missing_api_key"
        r = await client.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "invalid_api_key"
        r = await client.get("/v1/models", headers={"Authorization": "Bearer second"})
        assert r.status_code == 200
        assert (await client.get("/healthz")).status_code == 200  # open, for probes


@deadline(20)
async def test_one_key_can_never_cancel_another_keys_stream(start_server: StartServer) -> None:
    server = await start_server(api_keys="alice,mallory")
    alice = {"Authorization": "Bearer alice", "X-Session-Id": "shared"}
    mallory = {"Authorization": "Bearer mallory", "X-Session-Id": "shared"}
    async with server.client() as c1, server.client() as c2:
        async with c1.stream("POST", CHAT, json=LONG, headers=alice) as a:
            events = sse_events(a)
            await anext(events)
            stop = await c2.post("/v1/sessions/shared/cancel", headers=mallory)
            assert stop.json()["result"] == "nothing_live"
            # Mallory's prompt in "her" session 'shared' does not supersede Alice's.
            r = await c2.post(CHAT, json={"prompt": "hi", "max_tokens": 1}, headers=mallory)
            assert r.status_code == 200
            more = [await anext(events) for _ in range(3)]
            assert all(e["choices"][0]["finish_reason"] is None for e in more)
            stop = await c1.post("/v1/sessions/shared/cancel", headers=alice)
            assert stop.json()["result"] == "finished_cleanly"
