"""CORS in a real browser (Debian's Chromium through Playwright): a page on another
origin calls the API with the headers a client sends (a key, X-Session-Id), so
Chromium sends a preflight first. With the page's origin in JARVIS_CORS_ORIGINS the
call succeeds and the page reads X-Stream-Id and the stream; from an origin not
listed, the browser refuses to hand the answer to the page.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser

from jarvis_trio.testing import running_process
from tests.support.browser import launch

pytestmark = pytest.mark.timeout(90)

CALL = """async ([api, key]) => {
  try {
    const r = await fetch(api + "/v1/chat/completions", {
      method: "POST",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + key,
                "X-Session-Id": "cors-page"},
      body: JSON.stringify({messages: [{role: "user", content: "hi"}], stream: true,
                            max_tokens: 3}),
    });
    const text = await r.text();
    return {status: r.status, streamId: r.headers.get("X-Stream-Id"),
            requestId: r.headers.get("X-Request-Id"), done: text.includes("data: [DONE]")};
  } catch (error) {
    return {error: String(error)};
  }
}"""


class Blank(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>another origin</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, str]]:
    """Two blank pages on two origins of their own (127.0.0.1, two ports)."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), Blank) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        a, b = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        yield a, b
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    yield from launch()


def call_from(browser: Browser, page_url: str, api: str) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(20_000)
        page.goto(page_url)
        result: dict[str, Any] = page.evaluate(CALL, [api, "k1"])
        return result
    finally:
        context.close()


def test_a_listed_origin_calls_the_api_and_an_unlisted_one_cannot(
    browser: Browser, pages: tuple[str, str]
) -> None:
    listed, unlisted = pages
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0"]
    env = {
        "JARVIS_BACKEND": "sim",
        "JARVIS_SIM_TOKENS_PER_SECOND": "500",
        "JARVIS_API_KEYS": "k1",
        "JARVIS_CORS_ORIGINS": listed,
    }
    with running_process(argv, r"server_listening url=(\S+)", env) as api:
        ok = call_from(browser, listed + "/", api)
        refused = call_from(browser, unlisted + "/", api)
    assert ok.get("error") is None, ok
    assert ok["status"] == 200
    assert ok["streamId"], "X-Stream-Id is not exposed to the page"
    assert ok["requestId"]
    assert ok["done"]
    assert "Failed to fetch" in refused.get("error", ""), refused
