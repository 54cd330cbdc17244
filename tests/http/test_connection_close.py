"""Connection lifetime on the wire: real hypercorn (trio worker) on 127.0.0.1:0, raw sockets.

A response that says ``Connection: close`` must be followed by the server closing the
socket: a client that reads until EOF (HTTP/1.0 clients, ``check_http``, many proxies)
must not wait forever. And a kept-alive connection left idle is closed after hypercorn's
``keep_alive_timeout``. Both failed under quart-trio before ``ExchangeLifetime`` held back
the ``http.disconnect`` hypercorn posts from inside the final send (see its docstring).
"""

from __future__ import annotations

from functools import partial

import hypercorn.trio
import pytest
import trio

from jarvis_trio.api import create_app
from jarvis_trio.config import Settings
from jarvis_trio.server import hypercorn_config
from tests.conftest import StartServer
from tests.support.helpers import deadline

EOF_WITHIN = 5.0  # seconds; without the fix the socket stayed open for good


async def read_until_eof(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and read until the server closes it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        received = bytearray()
        with trio.fail_after(EOF_WITHIN):
            while chunk := await stream.receive_some(65536):
                received += chunk
    return bytes(received)


def head_of(answer: bytes) -> tuple[bytes, dict[bytes, bytes]]:
    head = answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    fields = dict(line.split(b":", 1) for line in head[1:])
    return head[0], {name.strip().lower(): value.strip().lower() for name, value in fields.items()}


BODY = b'{"prompt": "hi", "max_tokens": 3}'
STREAM_BODY = b'{"prompt": "hi", "max_tokens": 3, "stream": true}'


def post(path: str, body: bytes, *extra: bytes) -> bytes:
    lines = [
        b"POST " + path.encode() + b" HTTP/1.1",
        b"Host: x",
        b"Content-Type: application/json",
        b"Content-Length: %d" % len(body),
        *extra,
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


CASES = {
    # ExchangeLifetime says Connection: close: answered before the body was read.
    "auth error with an unread body": (post("/v1/chat/completions", BODY), b"401"),
    "unknown path with an unread body": (
        post("/v1/nope", BODY, b"Authorization: Bearer k"),
        b"404",
    ),
    # h11 says it: the client asked to close, or speaks HTTP/1.0.
    "client sends Connection: close": (
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer k\r\nConnection: close\r\n\r\n",
        b"200",
    ),
    "HTTP/1.0 client": (b"GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n", b"200"),
    "stream to a client that asked to close": (
        post("/v1/chat/completions", STREAM_BODY, b"Authorization: Bearer k", b"Connection: close"),
        b"200",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@deadline(20)
async def test_a_response_that_says_connection_close_closes_the_socket(
    start_server: StartServer, case: str
) -> None:
    request, status = CASES[case]
    server = await start_server(api_keys="k")
    port = int(server.url.rsplit(":", 1)[1])
    answer = await read_until_eof(port, request)
    status_line, headers = head_of(answer)
    assert status_line.split()[1] == status, answer[:200]
    assert headers[b"connection"] == b"close"
    if case.startswith("stream"):
        assert answer.rstrip().endswith(b"0")  # the chunked body ended before the close
        assert b"data: [DONE]" in answer


@deadline(20)
async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(
    nursery: trio.Nursery,
) -> None:
    """Same cause: hypercorn restarts its idle timer from inside the final send."""
    app = create_app(Settings(backend="sim"))
    config = hypercorn_config("127.0.0.1", 0)
    config.keep_alive_timeout = 0.5
    stop = trio.Event()
    binds: list[str] = await nursery.start(
        partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)
    )
    port = int(binds[0].rsplit(":", 1)[1])
    try:
        answer = await read_until_eof(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    finally:
        stop.set()
    status_line, headers = head_of(answer)
    assert status_line.split()[1] == b"200"
    assert b"connection" not in headers  # kept alive, then closed for being idle
