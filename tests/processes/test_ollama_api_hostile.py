"""Hostile input on Ollama's routes: generated bad requests get Ollama's 4xx, never a 500.

Property-based (Hypothesis) against a real server process, as test_hostile_input.py does
for ``/v1``: every generated request gets an answer below 500, a 4xx is
``{"error": "<message>"}``, and the server stays healthy throughout.
"""

from __future__ import annotations

import json
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
ROUTES = ["/api/chat", "/api/generate", "/api/show", "/api/embed"]


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    env = {"JARVIS_SIM_TOKENS_PER_SECOND": "20000", "JARVIS_MAX_BODY_BYTES": "65536"}
    argv = [str(BIN / "jarvis-trio"), "serve", "--port", "0", "--backend", "sim"]
    with running_process(argv, r"server_listening url=(\S+)", env) as url:
        yield url


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
message = st.dictionaries(
    st.sampled_from(["role", "content", "images", "tool_calls", "tool_name", "x"]),
    st.one_of(
        json_values,
        st.sampled_from(["user", "assistant", "tool", "wizard", "", "aGk="]),
        st.lists(st.sampled_from(["aGk=", "@@", ""]), max_size=2),
    ),
)
options = st.dictionaries(
    st.sampled_from(["temperature", "top_p", "num_predict", "stop", "seed", "top_k", "use_mmap"]),
    st.one_of(json_values, st.integers(-3, 4), st.floats(allow_nan=True, allow_infinity=True)),
)
ollama_like = st.fixed_dictionaries(
    {},
    optional={
        "model": st.one_of(json_values, st.sampled_from(["jarvis-sim", "jarvis-sim:latest", ""])),
        "messages": st.one_of(json_values, st.lists(message, max_size=3)),
        "prompt": st.one_of(json_values, st.sampled_from(["hi", ""])),
        "system": json_values,
        "images": st.one_of(json_values, st.lists(st.sampled_from(["aGk=", "@@"]), max_size=2)),
        "stream": json_values,
        "format": st.one_of(json_values, st.sampled_from(["json", ""])),
        "options": st.one_of(json_values, options),
        "tools": json_values,
        "think": st.one_of(json_values, st.sampled_from(["low", "max"])),
        "keep_alive": json_values,
        "suffix": json_values,
        "input": json_values,
        "logprobs": json_values,
        "top_logprobs": json_values,
    },
)
bodies = st.one_of(
    ollama_like.map(lambda b: json.dumps(b).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)


@pytest.mark.slow
def test_generated_bad_ollama_requests_get_only_ollama_4xx(server_url: str) -> None:
    statuses: Counter[int] = Counter()
    with httpx.Client(base_url=server_url, timeout=10) as client:

        @settings(
            max_examples=600,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        @given(body=bodies, route=st.sampled_from(ROUTES))
        def check(body: bytes, route: str) -> None:
            response = client.post(route, content=body)
            statuses[response.status_code] += 1
            assert response.status_code < 500 or response.status_code == 501, response.text
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/json"
                error = response.json()["error"]
                assert isinstance(error, str) and error
            else:  # a valid request: NDJSON or one object, ending with "done": true
                last = json.loads(response.text.strip().splitlines()[-1])
                assert last.get("done") is True or "capabilities" in last, response.text

        check()
        assert client.get("/healthz").json()["live_streams"] == 0
        ok = client.post("/api/generate", json={"model": "jarvis-sim", "prompt": "still fine"})
        assert ok.status_code == 200
    bad = sum(n for status, n in statuses.items() if 400 <= status < 500)
    assert bad >= 400, statuses
