"""JARVIS_CORS_ORIGINS: preflights and responses for allowed origins, nothing for others."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from jarvis_trio.config import Settings
from tests.conftest import StartServer
from tests.support.helpers import deadline, read_all_events

ALLOWED = "https://app.example.com"
KEY = {"Authorization": "Bearer k1"}


def preflight_headers(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,x-session-id",
    }


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


@deadline(20)
async def test_preflight_from_an_allowed_origin_is_answered_without_a_key(
    start_server: StartServer,
) -> None:
    server = await start_server(cors_origins=(ALLOWED,), api_keys=("k1",))
    async with server.client() as client:
        r = await client.options("/v1/chat/completions", headers=preflight_headers(ALLOWED))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert "POST" in r.headers["access-control-allow-methods"]
    allowed = r.headers["access-control-allow-headers"].lower().split(",")
    assert {"authorization", "content-type", "x-session-id"} <= set(allowed)
    assert int(r.headers["access-control-max-age"]) > 0
    assert "Origin" in r.headers["vary"]
    assert "access-control-allow-credentials" not in r.headers


@deadline(20)
async def test_responses_to_an_allowed_origin_expose_the_api_headers(
    start_server: StartServer,
) -> None:
    server = await start_server(cors_origins=(ALLOWED, "http://localhost:5173"), api_keys=("k1",))
    body = {"messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 3}
    headers = {**KEY, "Origin": ALLOWED, "X-Session-Id": "cors"}
    async with (
        server.client() as client,
        client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        events = await read_all_events(r)
    assert events[-1] == "[DONE]"
    assert r.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-stream-id", "x-session-id", "x-request-id", "retry-after"} <= exposed
    # An error answer (no key) carries them too, so the page can read the error.
    async with server.client() as client:
        denied = await client.get("/v1/models", headers={"Origin": "http://localhost:5173"})
    assert denied.status_code == 401
    assert denied.headers["access-control-allow-origin"] == "http://localhost:5173"


@deadline(20)
async def test_other_origins_get_no_cors_headers(start_server: StartServer) -> None:
    server = await start_server(cors_origins=(ALLOWED,))
    other = "https://evil.example.com"
    async with server.client() as client:
        pre = await client.options("/v1/chat/completions", headers=preflight_headers(other))
        get = await client.get("/v1/models", headers={"Origin": other})
        no_origin = await client.get("/v1/models")
    assert cors_headers(pre) == {}
    assert get.status_code == 200
    assert cors_headers(get) == {}
    assert cors_headers(no_origin) == {}
    assert "Origin" in get.headers["vary"]  # a cache keeps answers to each origin apart


@deadline(20)
async def test_cors_is_off_by_default(start_server: StartServer) -> None:
    server = await start_server()
    async with server.client() as client:
        pre = await client.options("/v1/chat/completions", headers=preflight_headers(ALLOWED))
        get = await client.get("/v1/models", headers={"Origin": ALLOWED})
    assert cors_headers(pre) == {}
    assert cors_headers(get) == {}


@deadline(20)
async def test_a_star_allows_any_origin(start_server: StartServer) -> None:
    server = await start_server(cors_origins=("*",))
    async with server.client() as client:
        r = await client.options("/healthz", headers=preflight_headers("http://127.0.0.1:3000"))
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"


def test_origins_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_CORS_ORIGINS", " https://a.example/, http://localhost:5173 ,")
    assert Settings().cors_origins == ("https://a.example", "http://localhost:5173")
    monkeypatch.setenv("JARVIS_CORS_ORIGINS", "")
    assert Settings().cors_origins == ()
    monkeypatch.setenv("JARVIS_CORS_ORIGINS", "app.example.com/path")
    with pytest.raises(ValidationError, match="is not an origin"):
        Settings()
