"""Every bad input gets an OpenAI-style JSON error with the right status, never a 500 or a hang."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import RunningServer, StartServer
from tests.support.helpers import deadline

CHAT = "/v1/chat/completions"
OK = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


def assert_error(r: httpx.Response, status: int, *, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    return error


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("empty body", b"", "invalid_json"),
    ("invalid json", b'{"messages": [', "invalid_json"),
    ("not utf-8", b"\xff\xfe{", "invalid_json"),
    ("json array", b"[1, 2]", "invalid_json"),
    ("json string", b'"hello"', "invalid_json"),
    ("no messages nor prompt", b"{}", "value_error"),
    (
        "both messages and prompt",
        b'{"prompt": "x", "messages": [{"role":"user","content":"x"}]}',
        "value_error",
    ),
    ("empty messages", b'{"messages": []}', "too_short"),
    ("messages not a list", b'{"messages": "hi"}', "list_type"),
    ("message not an object", b'{"messages": ["hi"]}', "model_attributes_type"),
    ("unknown role", b'{"messages": [{"role": "wizard", "content": "x"}]}', "union_tag_invalid"),
    ("missing role", b'{"messages": [{"content": "x"}]}', "union_tag_not_found"),
    ("missing content", b'{"messages": [{"role": "user"}]}', "missing"),
    ("content is a number", b'{"messages": [{"role": "user", "content": 5}]}', "string_type"),
    (
        "image part without a url",
        b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}',
        "missing",
    ),
    (
        "image url of another scheme",
        b'{"messages": [{"role": "user", "content": [{"type": "image_url",'
        b' "image_url": {"url": "file:///etc/passwd"}}]}]}',
        "value_error",
    ),
    (
        "audio content part",
        b'{"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}',
        "value_error",
    ),
    ("assistant with nothing", b'{"messages": [{"role": "assistant"}]}', "invalid_value"),
    (
        "tool result without its call id",
        b'{"messages": [{"role": "tool", "content": "4"}]}',
        "missing",
    ),
    (
        "tool call arguments not a string",
        b'{"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",'
        b' "function": {"name": "f", "arguments": {}}}]}]}',
        "string_type",
    ),
    ("top_logprobs without logprobs", b'{"prompt": "x", "top_logprobs": 2}', "invalid_value"),
    (
        "tool_choice naming no offered tool",
        b'{"prompt": "x", "tool_choice": {"type": "function", "function": {"name": "f"}}}',
        "invalid_value",
    ),
    ("tool without a name", b'{"prompt": "x", "tools": [{"type": "function"}]}', "missing"),
    (
        "response_format unknown",
        b'{"prompt": "x", "response_format": {"type": "xml"}}',
        "union_tag_invalid",
    ),
    ("logit_bias by word", b'{"prompt": "x", "logit_bias": {"hello": 5}}', "value_error"),
    ("penalty too high", b'{"prompt": "x", "presence_penalty": 3}', "less_than_equal"),
    ("stream not a bool", b'{"prompt": "x", "stream": "yes"}', "bool_type"),
    ("max_tokens zero", b'{"prompt": "x", "max_tokens": 0}', "greater_than_equal"),
    ("max_tokens float", b'{"prompt": "x", "max_tokens": 1.5}', "int_type"),
    ("temperature too high", b'{"prompt": "x", "temperature": 3}', "less_than_equal"),
    ("temperature NaN", b'{"prompt": "x", "temperature": NaN}', "finite_number"),
    ("top_p string", b'{"prompt": "x", "top_p": "0.5"}', "float_type"),
    ("too many stops", b'{"prompt": "x", "stop": ["a","b","c","d","e"]}', "value_error"),
    ("stop not strings", b'{"prompt": "x", "stop": [1]}', "value_error"),
    ("n greater than one", b'{"prompt": "x", "n": 2}', "unsupported_value"),
    ("seed string", b'{"prompt": "x", "seed": "7"}', "int_type"),
    ("stream_options without stream", b'{"prompt": "x", "stream_options": {}}', "value_error"),
]


@pytest.mark.parametrize(("name", "raw", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
@deadline(10)
async def test_bad_body_gets_400(
    client: httpx.AsyncClient, name: str, raw: bytes, code: str
) -> None:
    r = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    error = assert_error(r, 400, code=code)
    assert error["type"] == "invalid_request_error"


@deadline(10)
async def test_error_names_the_offending_field(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={"messages": [{"role": "wizard", "content": "x"}]})
    error = assert_error(r, 400)
    assert error["param"] == "messages.0.role"
    assert "messages.0.role" in error["message"]


@deadline(10)
async def test_unknown_model_gets_404(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json={**OK, "model": "gpt-nope"})
    error = assert_error(r, 404, code="model_not_found")
    assert error["param"] == "model"
    assert "jarvis-sim" in error["message"]


@pytest.mark.parametrize("session_id", ["", "x" * 129, "a b", "tab\there", "sl/ash", "é"], ids=repr)
@deadline(10)
async def test_bad_session_id_header_gets_400(client: httpx.AsyncClient, session_id: str) -> None:
    r = await client.post(CHAT, json=OK, headers={b"X-Session-Id": session_id.encode("utf-8")})
    error = assert_error(r, 400, code="invalid_header")
    assert error["param"] == "X-Session-Id"


@deadline(10)
async def test_bad_request_id_header_gets_400(client: httpx.AsyncClient) -> None:
    r = await client.post(CHAT, json=OK, headers={"X-Request-Id": "x" * 200})
    assert_error(r, 400, code="invalid_header")


@deadline(10)
async def test_unknown_route_and_wrong_method_are_json(client: httpx.AsyncClient) -> None:
    assert_error(await client.get("/v1/nope"), 404, code="not_found")
    assert_error(await client.get(CHAT), 405, code="method_not_allowed")
    assert_error(await client.delete("/v1/models"), 405)


@deadline(10)
async def test_stop_with_an_invalid_session_id_gets_400(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/v1/sessions/a%20b/cancel"), 400, code="invalid_id")


@deadline(20)
async def test_oversized_body_gets_413_and_the_kept_alive_client_does_not_hang(
    start_server: StartServer,
) -> None:
    server = await start_server(max_body_bytes=64 * 1024)
    big = b'{"prompt": "' + b"x" * (128 * 1024) + b'"}'
    async with server.client() as client:  # one connection pool, keep-alive on
        r = await client.post(CHAT, content=big, headers={"content-type": "application/json"})
        assert_error(r, 413, code="body_too_large")
        assert r.headers["connection"] == "close"
        again = await client.post(CHAT, json=OK)
        assert again.status_code == 200


@deadline(20)
async def test_oversized_chunked_body_gets_413(start_server: StartServer) -> None:
    server = await start_server(max_body_bytes=64 * 1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"prompt": "'
        for _ in range(32):
            yield b"x" * 4096
        yield b'"}'

    async with server.client() as client:
        try:
            r = await client.post(CHAT, content=chunks())
        except httpx.TransportError:
            pass  # the server may close before reading the rest: also fine
        else:
            assert_error(r, 413, code="body_too_large")
        again = await client.post(CHAT, json=OK)
        assert again.status_code == 200


@deadline(10)
async def test_body_just_under_the_limit_is_accepted(start_server: StartServer) -> None:
    server = await start_server(max_body_bytes=64 * 1024)
    content = "y" * (60 * 1024)
    async with server.client() as client:
        r = await client.post(CHAT, json={"prompt": content, "max_tokens": 1})
        assert r.status_code == 200


@deadline(20)
async def test_server_stays_healthy_after_bad_input(server: RunningServer) -> None:
    async with server.client() as client:
        for _, raw, _ in BAD_BODIES:
            await client.post(CHAT, content=raw)
        assert (await client.get("/healthz")).json()["sessions"] == 0
        assert (await client.post(CHAT, json=OK)).status_code == 200


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("auth error", 401),
        ("bad request id", 400),
        ("unknown path", 404),
        ("stop with a body", 200),
    ],
)
@deadline(30)
async def test_answering_without_reading_a_large_body_never_hangs_the_next_request(
    start_server: StartServer, case: str, status: int
) -> None:
    """Found in review: any early answer, not just a 413, left the kept-alive
    connection with unread body, and the client's next request hung."""
    server = await start_server(api_keys="k")
    auth = {"Authorization": "Bearer k"}
    path, headers = {
        "auth error": (CHAT, {"Authorization": "Bearer wrong"}),
        "bad request id": (CHAT, {**auth, "X-Request-Id": "bad id!"}),
        "unknown path": ("/v1/nope", auth),
        "stop with a body": ("/v1/sessions/s/cancel", auth),
    }[case]
    big = b'{"prompt": "' + b"x" * 600_000 + b'"}'
    async with server.client(limits=httpx.Limits(max_connections=1), timeout=5.0) as client:
        first = await client.post(path, content=big, headers=headers)
        assert first.status_code == status
        assert first.headers["connection"] == "close"
        again = await client.post(CHAT, json=OK, headers=auth)
        assert again.status_code == 200
        assert "connection" not in again.headers  # a fully read body keeps the connection


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("integer past 4300 digits", b'{"prompt": "hi", "seed": ' + b"1" * 5000 + b"}"),
        ("lone surrogate in a prompt", b'{"prompt": "hi \\ud800 there"}'),
        ("lone surrogate in a key", b'{"prompt": "hi", "\\udfff": 1}'),
    ],
)
@deadline(10)
async def test_json_that_python_parses_but_cannot_use_is_a_400(
    client: httpx.AsyncClient, name: str, raw: bytes
) -> None:
    """Found in review: these were 500s with a traceback."""
    r = await client.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert_error(r, 400)
