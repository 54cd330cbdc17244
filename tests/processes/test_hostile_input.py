"""Hostile input: generated bad requests, bad headers and slowloris bodies.

Property-based (Hypothesis) against a real server process. Every generated
request gets a JSON answer below 500 (a 4xx error, or a 200 when the fuzzer
happens to write a valid request); the server stays healthy throughout.
"""

from __future__ import annotations

import json
import re
import socket
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jarvis_trio.testing import running_process

BIN = Path(sys.executable).parent
CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    """A real `jarvis-trio serve` process: fast sim, small body limit, 1 s body timeout."""
    env = {
        "JARVIS_SIM_TOKENS_PER_SECOND": "20000",
        "JARVIS_MAX_BODY_BYTES": "65536",
        "JARVIS_BODY_TIMEOUT": "1",
    }
    argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0", "--backend", "sim"]
    with running_process(argv, r"server_listening url=(\S+)", env) as url:
        yield url


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
messages = st.one_of(
    json_values,
    st.lists(
        st.dictionaries(
            st.sampled_from(["role", "content", "name", "x"]),
            st.one_of(json_values, st.sampled_from(["user", "system", "wizard", ""])),
        ),
        max_size=3,
    ),
)
chat_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(json_values, st.sampled_from(["jarvis-sim", "", "gpt-x"])),
        "messages": messages,
        "prompt": json_values,
        "stream": json_values,
        "stream_options": json_values,
        "max_tokens": st.one_of(json_values, st.integers(-5, 3)),
        "temperature": st.one_of(json_values, st.floats(allow_nan=True, allow_infinity=True)),
        "top_p": json_values,
        "stop": json_values,
        "seed": json_values,
        "n": json_values,
    },
)
bodies = st.one_of(
    chat_like.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
# Header values HTTP/1.1 can carry (h11 refuses others on both ends): visible bytes,
# obs-text, inner spaces. Control characters are sent raw in a test below.
_visible = st.integers(0x21, 0xFF).filter(lambda c: c != 0x7F)
header_values = st.one_of(
    st.lists(st.lists(_visible, min_size=1, max_size=40).map(bytes), max_size=5).map(b" ".join),
    st.just(b"x" * 5000),
    st.just(b""),
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "x-session-id": header_values,
        "x-request-id": header_values,
        "authorization": header_values,
        "content-type": st.sampled_from([b"application/json", b"text/plain", b"\x01"]),
    },
)


@pytest.mark.slow
def test_a_thousand_generated_bad_requests_get_only_4xx_json(server_url: str) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=server_url, timeout=10) as client:

        @settings(
            max_examples=1300,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=bodies, extra=headers, stream_path=st.booleans())
        def check(body: bytes, extra: dict[str, bytes], stream_path: bool) -> None:
            sent = {k.encode(): v for k, v in extra.items()}
            response = client.post(CHAT, content=body, headers=sent)
            statuses[response.status_code] += 1
            assert response.status_code < 500, response.text
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/json"
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()
        assert client.get("/healthz").json()["status"] == "ok"
        assert client.post(CHAT, json={"prompt": "still fine", "max_tokens": 2}).status_code == 200
    bad = sum(n for status, n in statuses.items() if 400 <= status < 500)
    assert bad >= 1000, statuses


def test_slowloris_body_gets_408_and_does_not_block_others(server_url: str) -> None:
    host, port = server_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as slow:
        slow.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"pro'
        )
        # Meanwhile, the server serves everyone else.
        with httpx.Client(base_url=server_url, timeout=10) as client:
            ok = client.post(CHAT, json={"prompt": "hi", "max_tokens": 1})
            assert ok.status_code == 200
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = slow.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    assert json.loads(body.split(b"\r\n")[-1] if b"\r\n" in body else body)["error"]
    with httpx.Client(base_url=server_url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "session_id",
    [b"", b"x" * 129, b"a b", b"\xff\xfe", b"a" * 8000],
    ids=["empty", "129 chars", "space", "not utf-8", "8 KB"],
)
def test_bad_session_ids_are_400_json(server_url: str, session_id: bytes) -> None:
    with httpx.Client(base_url=server_url, timeout=10) as client:
        r = client.post(CHAT, json={"prompt": "x"}, headers={b"X-Session-Id": session_id})
        assert r.status_code == 400
        assert r.json()["error"]["param"] == "X-Session-Id"


@pytest.mark.parametrize(
    "value", [b"\x01\x02\x03", b"a\x1bb", b"x" * 100_000], ids=["control", "escape", "100 KB"]
)
def test_headers_http_itself_refuses_get_a_4xx_before_the_app(
    server_url: str, value: bytes
) -> None:
    """hypercorn's HTTP parser answers these itself (a plain 4xx, not our JSON)."""
    host, port = server_url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Session-Id: "
            + value
            + b"\r\nContent-Length: 2\r\n\r\n{}"
        )
        answer = raw.recv(4096)
    assert re.match(rb"HTTP/1.1 4\d\d ", answer), answer[:100]
    with httpx.Client(base_url=server_url, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
