"""The chat page (``GET /``) in a real browser: Debian's Chromium driven by Playwright.

The server is a real ``jarvis-trio serve`` process on the embedded model with
marked tokens (every word carries its answer's ``~xxxx`` mark), so "no token of
the first answer in the second" is a plain text check. The sim is
deterministic, so a finished answer is compared with the exact text it must be.

These tests are synchronous (Playwright's sync API); each uses a fresh browser
context, so fresh storage (no chats) and a new session id.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from jarvis_trio.backends.sim import MODEL_ID, sim_pieces
from jarvis_trio.generation import ChatTurn, GenerationRequest
from jarvis_trio.testing import running_process
from tests.support.browser import launch

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LONG = "Long essay about AI"
SHORT = "What is 2+2?"
MARK = re.compile(r"~[0-9a-f]{4}")
# Generous for a loaded 2-core CI machine; each is an upper bound, never a wait.
UI_TIMEOUT_MS = 20_000
LONG_ANSWER_MS = 45_000  # the whole long answer (15 s at the test pace), with room

pytestmark = pytest.mark.timeout(90)
expect.set_options(timeout=UI_TIMEOUT_MS)


def expected_answer(prompt: str) -> str:
    request = GenerationRequest(model=MODEL_ID, messages=(ChatTurn("user", prompt),))
    return "".join(sim_pieces(request, marked=True))


def serve(*args: str, **env: str) -> Iterator[str]:
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0", *args]
    settings = {
        "JARVIS_BACKEND": "sim",
        "JARVIS_SIM_MARK_TOKENS": "true",
        # 600 tokens of the long answer take 15 s: the tests act mid-answer even when
        # a loaded machine makes the browser lag seconds behind the server.
        "JARVIS_SIM_TOKENS_PER_SECOND": "40",
        **env,
    }
    with running_process(argv, r"server_listening url=(\S+)", settings) as url:
        yield url


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    yield from serve()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # A wheel scrolls at once with no smooth scrolling: positions to compare.
    yield from launch("--disable-component-update", "--disable-smooth-scrolling")


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(
        viewport={"width": 900, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
    )
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # The page never trips its own Content-Security-Policy (an inline style or script, a
    # remote load). Failed requests are logged too, but some tests make them on purpose.
    page.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield page
    context.close()
    assert errors == [], errors


def send(page: Page, prompt: str) -> None:
    page.get_by_test_id("prompt-input").fill(prompt)
    page.get_by_test_id("send-button").click()


def answers(page: Page) -> Locator:
    return page.get_by_test_id("assistant-message")


def text_of(answer: Locator) -> str:
    return answer.locator(".text").text_content() or ""


def wait_for_words(answer: Locator, words: int) -> None:
    """Until the answer shows at least ``words`` words (bounded by the UI timeout)."""
    expect(answer.locator(".text")).to_have_text(re.compile(rf"^(\S+\s+){{{words}}}"))


# The page keeps each chat under its own localStorage key and the tab's state (the chat on
# screen, the API key) in sessionStorage: these let a test's script read and edit them.
STORAGE_JS = """
    const TAB = "jarvis-trio.tab.v1", INDEX = "jarvis-trio.chats.v1";
    const chatKey = (id) => "jarvis-trio.chat." + id;
    const currentId = () => JSON.parse(sessionStorage.getItem(TAB)).current;
    const loadChat = () => JSON.parse(localStorage.getItem(chatKey(currentId())));
    const saveChat = (chat) => localStorage.setItem(chatKey(chat.id), JSON.stringify(chat));
"""


def away_and_back(page: Page, server: str, edit_storage: str) -> None:
    """Leave the page (it saves its state as it goes), run the statements
    ``edit_storage`` on its storage (with the helpers of ``STORAGE_JS``), then load the
    page again."""
    page.goto(f"{server}/healthz")
    page.evaluate("() => {" + STORAGE_JS + edit_storage + "}")
    page.goto(server)


def session_of(page: Page) -> str:
    return page.get_by_test_id("session-id").text_content() or ""


def test_second_prompt_supersedes_the_first_and_never_mixes(server: str, page: Page) -> None:
    page.goto(server)
    send(page, LONG)
    first = answers(page).nth(0)
    wait_for_words(first, 10)
    expect(first).to_have_attribute("data-status", "streaming")

    send(page, SHORT)
    second = answers(page).nth(1)
    expect(second).to_have_attribute("data-status", "done")
    expect(first).to_have_attribute("data-status", "superseded")

    first_text, second_text = text_of(first), text_of(second)
    assert second_text == expected_answer(SHORT)
    first_marks, second_marks = set(MARK.findall(first_text)), set(MARK.findall(second_text))
    assert len(first_marks) == 1 and len(second_marks) == 1
    assert first_marks.isdisjoint(second_marks)  # no token of the first answer in the second
    assert expected_answer(LONG).startswith(first_text)  # the first was cut, not mangled
    assert len(first_text) < len(expected_answer(LONG))
    first_id, second_id = (
        first.get_attribute("data-stream-id"),
        second.get_attribute("data-stream-id"),
    )
    assert first_id and second_id and first_id != second_id
    expect(page.get_by_test_id("user-message")).to_have_count(2)
    expect(second.locator(".ttft")).to_contain_text("first token")
    expect(second.locator(".rate")).to_contain_text("tokens/s")

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-supersede.png", full_page=True)


def test_stop_shows_stopped_once_joined_and_nothing_stays_live(server: str, page: Page) -> None:
    page.goto(server)
    send(page, LONG)
    answer = answers(page).nth(0)
    wait_for_words(answer, 10)
    expect(page.get_by_test_id("stop-button")).to_be_enabled()
    with page.expect_response(re.compile(r"/v1/sessions/.+/cancel$")) as cancel:
        page.get_by_test_id("stop-button").click()
    report = cancel.value.json()
    assert report["result"] == "finished_cleanly"
    assert report["stream_id"] == answer.get_attribute("data-stream-id")
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(page.get_by_test_id("stop-button")).to_be_disabled()
    assert expected_answer(LONG).startswith(text_of(answer))

    health = httpx.get(f"{server}/healthz").json()
    assert health["live_streams"] == 0
    requests = httpx.get(f"{server}/v1/requests").json()["data"]
    assert [r for r in requests if r["session_id"] == session_of(page)] == []


@pytest.mark.slow
def test_refresh_mid_answer_keeps_the_text_and_continues_to_done(server: str, page: Page) -> None:
    page.goto(server)
    send(page, LONG)
    answer = answers(page).nth(0)
    wait_for_words(answer, 20)
    stream_id = answer.get_attribute("data-stream-id")
    session = session_of(page)
    before = text_of(answer)

    page.reload()
    answer = answers(page).nth(0)
    assert session_of(page) == session  # the tab keeps its session
    assert text_of(answer).startswith(before)  # shown from storage at once, intact
    expect(answer).to_have_attribute("data-stream-id", stream_id or "")
    expect(answer).to_have_attribute("data-status", "streaming")
    expect(answer).to_have_attribute("data-status", "done", timeout=LONG_ANSWER_MS)
    # Nothing lost, nothing doubled across the refresh: exactly the model's answer.
    assert text_of(answer) == expected_answer(LONG)
    expect(page.get_by_test_id("user-message")).to_have_text([LONG])


@pytest.mark.slow
def test_refresh_in_a_new_tab_state_replays_the_whole_answer(server: str, page: Page) -> None:
    """Without the stored transcript (storage cleared but the same session id), the
    viewer's replay alone rebuilds the whole answer."""
    page.goto(server)
    send(page, LONG)
    answer = answers(page).nth(0)
    wait_for_words(answer, 10)
    away_and_back(
        page,
        server,
        """
            const saved = loadChat();
            const turn = saved.turns[1];
            turn.text = ""; turn.seq = 0; turn.lastEventId = null; turn.tokens = 0;
            saveChat(saved);
        """,
    )
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done", timeout=LONG_ANSWER_MS)
    assert text_of(answer) == expected_answer(LONG)


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[str]:
    yield from serve(JARVIS_API_KEYS="web-test-key")


def test_page_asks_for_a_key_when_the_server_has_keys(keyed_server: str, page: Page) -> None:
    page.goto(keyed_server)
    key_form = page.get_by_test_id("api-key-form")
    expect(key_form).to_be_visible()
    page.get_by_test_id("api-key-input").fill("web-test-key")
    page.get_by_test_id("api-key-save").click()
    expect(key_form).to_be_hidden()
    send(page, SHORT)
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    assert text_of(answer) == expected_answer(SHORT)


def test_an_error_is_shown_on_the_answer(server: str, page: Page) -> None:
    page.goto(server)
    away_and_back(
        page,
        server,
        """
            const chat = {id: "bad id with spaces", title: "", turns: [], updatedAt: Date.now()};
            saveChat(chat);
            localStorage.setItem(INDEX, JSON.stringify([chat.id]));
            sessionStorage.setItem(TAB, JSON.stringify({current: chat.id, apiKey: ""}));
        """,
    )
    send(page, SHORT)
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "error")
    expect(answer.locator(".error")).to_contain_text("X-Session-Id")


def test_a_refresh_before_the_prompt_was_taken_never_shows_another_answer(
    server: str, page: Page
) -> None:
    """Found in review: a turn saved before its stream id came back adopted whatever the
    session's newest stream was (an earlier turn's answer)."""
    page.goto(server)
    send(page, SHORT)
    first = answers(page).nth(0)
    expect(first).to_have_attribute("data-status", "done")
    away_and_back(
        page,
        server,
        """
            const saved = loadChat();
            saved.turns[1].status = "streaming";  // an older answer left streaming
            saved.turns.push({role: "user", text: "a prompt the server never saw"});
            saved.turns.push({role: "assistant", text: "", status: "streaming", streamId: null,
                seq: 0, tokens: 0, sentAt: Date.now(), ttftMs: null, firstAt: null,
                lastAt: null, error: "", lastEventId: null, requestId: "web-never-sent"});
            saveChat(saved);
        """,
    )
    first, lost = answers(page).nth(0), answers(page).nth(1)
    expect(lost).to_have_attribute("data-status", "error")
    expect(lost.locator(".error")).to_contain_text("lost in the refresh")
    assert text_of(lost) == ""
    expect(first).to_have_attribute("data-status", "superseded")  # only the newest is live
    assert text_of(first) == expected_answer(SHORT)
    expect(page.get_by_test_id("stop-button")).to_be_disabled()


# -- the chat app: Markdown, chats, history, controls, errors
#
# Answers with Markdown come from a tiny OpenAI-compatible upstream in this process (a
# thread), which a real `jarvis-trio serve --backend openai` streams from: the page, the
# gateway and the wire are the real ones; only the model is canned.

CODE = 'def add(a, b):\n    return a + b  # the sum\n\nprint("sum", add(1, 2))'
MARKDOWN = f"""## Plan

Here is **bold**, `inline code` and a [link](https://example.com/docs).

```python
{CODE}
```

- one
- two
"""
XSS = """Before <img src=x onerror="window.pwned = 1"> and <script>window.pwned = 2</script>

<div onclick="window.pwned = 3">block html</div>

[click me](javascript:window.pwned=4) ![tracker](http://127.0.0.1:9/pixel.png)

<iframe src="http://127.0.0.1:9/"></iframe> after"""
WIDE = "Here:\n\n```bash\n" + "echo " + "x" * 300 + "\n```\n"
CANNED = {"markdown please": MARKDOWN, "xss please": XSS, "wide please": WIDE}
FAIL_PROMPT = "fail please"


class CannedModel(BaseHTTPRequestHandler):
    """``/v1/models`` and streaming ``/v1/chat/completions``: the answer to a prompt in
    ``CANNED`` (else an echo), in pieces of 7 characters, 10 ms apart."""

    protocol_version = "HTTP/1.0"  # the body ends when the connection closes

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def reply_json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            return self.reply_json(404, {"error": {"message": "no such path"}})
        model = {"id": "canned", "object": "model", "created": 0, "owned_by": "tests"}
        self.reply_json(200, {"object": "list", "data": [model]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
        if prompt == FAIL_PROMPT:
            return self.reply_json(500, {"error": {"message": "the canned model broke"}})
        answer = CANNED.get(prompt, f"You said: {prompt}")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        pieces = [answer[i : i + 7] for i in range(0, len(answer), 7)]
        for piece in pieces:
            chunk = {"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
            self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)
        last = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        self.wfile.write(f"data: {json.dumps(last)}\n\ndata: [DONE]\n\n".encode())


@pytest.fixture(scope="module")
def canned_server() -> Iterator[str]:
    """The gateway on the canned model."""
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), CannedModel)
    thread = threading.Thread(target=upstream.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{upstream.server_address[1]}/v1"
        yield from serve(JARVIS_BACKEND="openai", JARVIS_UPSTREAM_URL=url)
    finally:
        upstream.shutdown()
        upstream.server_close()


def clipboard(page: Page) -> str:
    text: str = page.evaluate("navigator.clipboard.readText()")
    return text


def sent_body(page: Page, action: Callable[[], object]) -> dict[str, Any]:
    """The body of the chat request that ``action()`` makes the page send."""
    with page.expect_request(re.compile(r"/v1/chat/completions$")) as request:
        action()
    body = request.value.post_data_json
    assert isinstance(body, dict)
    return body


def sent_messages(page: Page, action: Callable[[], object]) -> list[dict[str, str]]:
    """The ``messages`` of the chat request that ``action()`` makes the page send."""
    messages: list[dict[str, str]] = sent_body(page, action)["messages"]
    return messages


def ended_as(server: str, outcome: str) -> float:
    """The server's count of streams ended with ``outcome`` (from /metrics)."""
    text = httpx.get(f"{server}/metrics").text
    match = re.search(rf'^jarvis_streams_ended_total{{outcome="{outcome}"}} (\S+)$', text, re.M)
    assert match, text
    return float(match.group(1))


def distance_from_bottom(page: Page) -> float:
    value: float = page.get_by_test_id("transcript").evaluate(
        "t => t.scrollHeight - t.scrollTop - t.clientHeight"
    )
    return value


def test_markdown_is_rendered_highlighted_and_copyable(canned_server: str, page: Page) -> None:
    page.goto(canned_server)
    send(page, "markdown please")
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    body = answer.locator(".text")
    expect(body.locator("h2")).to_have_text("Plan")
    expect(body.locator("strong")).to_have_text("bold")
    expect(body.locator("p code")).to_have_text("inline code")
    expect(body.locator("li")).to_have_text(["one", "two"])
    link = body.locator("a")
    expect(link).to_have_attribute("href", "https://example.com/docs")
    expect(link).to_have_attribute("rel", re.compile("noopener"))
    code = body.locator(".code-block code")
    expect(code).to_have_class(re.compile(r"\bhljs\b"))
    expect(code.locator(".hljs-keyword").first).to_have_text("def")
    expect(code.locator(".hljs-string")).to_have_text('"sum"')
    expect(code.locator(".hljs-comment")).to_have_text("# the sum")
    assert code.text_content() == CODE + "\n"
    assert "**" not in (body.text_content() or "") and "##" not in (body.text_content() or "")

    body.get_by_test_id("code-copy-button").click()
    expect(body.get_by_test_id("code-copy-button")).to_have_text("Copied")
    assert clipboard(page) == CODE + "\n"
    answer.get_by_test_id("copy-button").click()
    expect(answer.get_by_test_id("copy-button")).to_have_text("Copied")
    assert clipboard(page) == MARKDOWN  # the answer as the model wrote it


def test_html_in_model_output_never_runs_or_loads(canned_server: str, page: Page) -> None:
    remote: list[str] = []
    page.on("request", lambda r: remote.append(r.url) if ":9/" in r.url else None)
    page.goto(canned_server)
    send(page, "xss please")
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    body = answer.locator(".text")
    # The model's HTML shows as the text it wrote; none of it became elements.
    expect(body).to_contain_text('<img src=x onerror="window.pwned = 1">')
    expect(body).to_contain_text("<script>window.pwned = 2</script>")
    expect(body).to_contain_text('<div onclick="window.pwned = 3">block html</div>')
    for tag in ("img", "script", "iframe", "div[onclick]", "[onerror]", "[onclick]"):
        expect(body.locator(tag)).to_have_count(0)
    javascript_link = body.get_by_text("click me")
    assert (javascript_link.get_attribute("href") or "").startswith("javascript:") is False
    javascript_link.click()
    tracker = body.get_by_text("[image: tracker]")  # an image is only ever a link
    expect(tracker).to_have_attribute("href", "http://127.0.0.1:9/pixel.png")
    assert page.evaluate("window.pwned") is None
    assert remote == []


@pytest.mark.slow
def test_follows_the_answer_down_and_stays_put_when_scrolled_up(server: str, page: Page) -> None:
    page.set_viewport_size({"width": 900, "height": 520})
    page.goto(server)
    page.get_by_test_id("prompt-input").fill(LONG)
    page.get_by_test_id("prompt-input").press("Enter")  # Enter sends
    answer = answers(page).nth(0)
    wait_for_words(answer, 150)  # well past one screen
    transcript = page.get_by_test_id("transcript")
    assert transcript.evaluate("t => t.scrollHeight > t.clientHeight + 200")
    assert distance_from_bottom(page) <= 48
    jump = page.get_by_test_id("jump-to-latest")
    expect(jump).to_be_hidden()

    transcript.hover()
    page.mouse.wheel(0, -400)
    expect(jump).to_be_visible()
    held = transcript.evaluate("t => t.scrollTop")
    wait_for_words(answer, 220)  # the answer grew ...
    assert transcript.evaluate("t => t.scrollTop") == held  # ... and the reader stayed put
    assert distance_from_bottom(page) > 48

    meta = answer.locator(".meta")
    streaming_box = meta.bounding_box()
    jump.click()
    expect(jump).to_be_hidden()
    wait_for_words(answer, 260)
    page.wait_for_function(
        "() => { const t = document.getElementById('transcript');"
        " return t.scrollHeight - t.scrollTop - t.clientHeight <= 48; }"
    )
    page.keyboard.press("Escape")  # Esc stops
    expect(answer).to_have_attribute("data-status", "stopped")
    # The status line kept its height while it filled in (tokens/s, partial, buttons).
    expect(answer.get_by_test_id("copy-button")).to_be_visible()
    stopped_box = meta.bounding_box()
    assert streaming_box and stopped_box and stopped_box["height"] == streaming_box["height"]


@pytest.mark.slow
def test_chats_survive_a_reload_and_switching_leaves_a_stream_streaming(
    server: str, page: Page
) -> None:
    page.goto(server)
    send(page, LONG)
    first = answers(page).nth(0)
    wait_for_words(first, 10)
    first_session, first_stream = session_of(page), first.get_attribute("data-stream-id")

    page.get_by_test_id("new-chat-button").click()
    expect(answers(page)).to_have_count(0)
    second_session = session_of(page)
    assert second_session != first_session
    send(page, SHORT)
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    items = page.get_by_test_id("chat-item")
    expect(items).to_have_count(2)
    expect(items.nth(0)).to_have_attribute("data-session-id", second_session)
    expect(items.nth(1)).to_have_attribute("data-session-id", first_session)
    expect(items).to_have_text([re.compile(re.escape(SHORT)), re.compile(LONG)])

    # The first chat's answer went on streaming while the second chat was on screen.
    live = httpx.get(f"{server}/v1/requests").json()["data"]
    assert [
        (r["session_id"], r["id"], r["state"])
        for r in live
        if r["session_id"] in (first_session, second_session)
    ] == [(first_session, first_stream, "live")]
    page.reload()
    expect(items).to_have_count(2)
    assert session_of(page) == second_session  # the tab shows the chat it showed
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    assert text_of(answers(page).nth(0)) == expected_answer(SHORT)

    items.nth(1).get_by_test_id("chat-open").click()
    assert session_of(page) == first_session
    expect(page.get_by_test_id("user-message")).to_have_text([LONG])
    expect(first).to_have_attribute("data-stream-id", first_stream or "")
    expect(first).to_have_attribute("data-status", "done", timeout=LONG_ANSWER_MS)
    assert text_of(first) == expected_answer(LONG)  # re-attached after the reload, intact


@pytest.mark.slow
def test_partial_answers_are_in_the_next_requests_messages(server: str, page: Page) -> None:
    page.goto(server)
    send(page, LONG)
    first = answers(page).nth(0)
    wait_for_words(first, 10)
    page.get_by_test_id("stop-button").click()
    expect(first).to_have_attribute("data-status", "stopped")
    expect(first.locator(".partial-note")).to_have_text("partial answer")
    stopped = text_of(first)

    messages = sent_messages(page, lambda: send(page, "Long story please"))
    assert messages == [
        {"role": "user", "content": LONG},
        {"role": "assistant", "content": stopped},
        {"role": "user", "content": "Long story please"},
    ]
    second = answers(page).nth(1)
    wait_for_words(second, 10)
    messages = sent_messages(page, lambda: send(page, SHORT))  # supersedes the second
    expect(second).to_have_attribute("data-status", "superseded")
    assert [m["role"] for m in messages] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[3]["content"] and text_of(second).startswith(messages[3]["content"])
    expect(answers(page).nth(2)).to_have_attribute("data-status", "done")


@pytest.mark.slow
def test_edit_and_resend_supersedes_the_live_stream(server: str, page: Page) -> None:
    page.goto(server)
    send(page, SHORT)
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    send(page, LONG)
    live = answers(page).nth(1)
    wait_for_words(live, 10)
    cut_stream = live.get_attribute("data-stream-id")
    superseded_before = ended_as(server, "superseded")

    page.get_by_test_id("user-message").nth(1).hover()
    page.get_by_test_id("edit-button").nth(1).click()
    page.get_by_test_id("edit-input").fill("What is 3+3?")
    messages = sent_messages(page, lambda: page.get_by_test_id("edit-send").click())
    assert messages == [
        {"role": "user", "content": SHORT},
        {"role": "assistant", "content": expected_answer(SHORT)},
        {"role": "user", "content": "What is 3+3?"},
    ]
    expect(page.get_by_test_id("user-message")).to_have_text([SHORT, "What is 3+3?"])
    expect(answers(page)).to_have_count(2)
    answer = answers(page).nth(1)
    expect(answer).to_have_attribute("data-status", "done")
    assert answer.get_attribute("data-stream-id") != cut_stream
    assert text_of(answer) == expected_answer("What is 3+3?")
    assert ended_as(server, "superseded") == superseded_before + 1  # cut, not left running
    requests = httpx.get(f"{server}/v1/requests").json()["data"]
    assert [r for r in requests if r["session_id"] == session_of(page)] == []


def test_system_prompt_and_model_reach_the_request(server: str, page: Page) -> None:
    page.goto(server)
    page.get_by_text("System prompt").click()
    page.get_by_test_id("system-prompt").fill("Answer like a pirate.")
    page.get_by_test_id("model-select").select_option(MODEL_ID)
    body = sent_body(page, lambda: send(page, SHORT))
    assert body["model"] == MODEL_ID
    assert body["messages"] == [
        {"role": "system", "content": "Answer like a pirate."},
        {"role": "user", "content": SHORT},
    ]
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    page.reload()  # both are the chat's, kept with it
    expect(page.get_by_test_id("system-prompt")).to_have_value("Answer like a pirate.")
    expect(page.get_by_test_id("model-select")).to_have_value(MODEL_ID)


@pytest.mark.slow
def test_regenerate_replaces_the_last_answer(server: str, page: Page) -> None:
    page.goto(server)
    send(page, SHORT)
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    before = answer.get_attribute("data-stream-id")
    messages = sent_messages(page, lambda: answer.get_by_test_id("regenerate-button").click())
    assert messages == [{"role": "user", "content": SHORT}]
    expect(answers(page)).to_have_count(1)
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    assert answer.get_attribute("data-stream-id") != before
    assert text_of(answer) == expected_answer(SHORT)


def test_429_and_401_say_what_to_do(keyed_server: str, page: Page) -> None:
    page.goto(keyed_server)
    expect(page.get_by_test_id("api-key-form")).to_be_visible()
    send(page, SHORT)  # no key yet: the server's 401
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "error")
    expect(answer.locator(".error")).to_contain_text("needs a valid API key (HTTP 401)")
    page.get_by_test_id("api-key-input").fill("web-test-key")
    page.get_by_test_id("api-key-save").click()
    answer.get_by_test_id("regenerate-button").click()
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")

    # A rate-limiting proxy in front of the server: its 429 with Retry-After.
    page.route(
        re.compile(r"/v1/chat/completions$"),
        lambda route: route.fulfill(
            status=429,
            headers={"Retry-After": "17", "Content-Type": "application/json"},
            body=json.dumps({"error": {"message": "Slow down.", "type": "rate_limit_error"}}),
        ),
    )
    send(page, "another one")
    limited = answers(page).nth(1)
    expect(limited).to_have_attribute("data-status", "error")
    expect(limited.locator(".error")).to_contain_text("Too many requests (HTTP 429): Slow down.")
    expect(limited.locator(".error")).to_contain_text("Try again in 17 s")
    expect(page.get_by_test_id("stop-button")).to_be_disabled()  # never left streaming


def test_server_failure_and_lost_connection_are_shown(canned_server: str, page: Page) -> None:
    page.goto(canned_server)
    send(page, FAIL_PROMPT)
    failed = answers(page).nth(0)
    expect(failed).to_have_attribute("data-status", "error")
    expect(failed.locator(".error")).to_contain_text("HTTP 502")
    expect(failed.locator(".error")).to_contain_text("the canned model broke")

    page.route(re.compile(r"/v1/chat/completions$"), lambda route: route.abort())
    send(page, "anyone there?")
    lost = answers(page).nth(1)
    expect(lost).to_have_attribute("data-status", "error")
    expect(lost.locator(".error")).to_contain_text("Could not reach the server")
    expect(page.get_by_test_id("stop-button")).to_be_disabled()


def test_usable_at_phone_width(canned_server: str, page: Page) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(canned_server)
    expect(page.get_by_test_id("chat-list")).not_to_be_in_viewport()  # off-canvas
    send(page, "wide please")
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    # Nothing wider than the phone: a long code line scrolls inside its block.
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    box = answer.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    for testid in ("prompt-input", "send-button", "stop-button", "new-chat", "model-select"):
        expect(page.get_by_test_id(testid)).to_be_in_viewport()

    page.get_by_role("button", name="Show chats").click()
    expect(page.get_by_test_id("chat-list")).to_be_in_viewport()
    expect(page.get_by_test_id("chat-item")).to_have_count(1)
    page.get_by_test_id("new-chat-button").click()  # closes the list, opens a new chat
    expect(page.get_by_test_id("chat-list")).not_to_be_in_viewport()
    expect(answers(page)).to_have_count(0)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "chat-phone.png")


@pytest.mark.slow
def test_chats_are_renamed_and_deleted(server: str, page: Page) -> None:
    page.goto(server)
    send(page, SHORT)
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    first_session = session_of(page)
    page.get_by_test_id("new-chat-button").click()
    send(page, "Another question")
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    items, titles = page.get_by_test_id("chat-item"), page.get_by_test_id("chat-open")
    expect(titles).to_have_text(["Another question", SHORT])  # titled by the first prompt

    items.nth(1).hover()  # its buttons show on hover (always on the current chat)
    items.nth(1).get_by_test_id("chat-rename").click()
    page.get_by_test_id("chat-rename-input").fill("Arithmetic")
    page.get_by_test_id("chat-rename-input").press("Enter")
    expect(titles).to_have_text(["Another question", "Arithmetic"])
    page.reload()
    expect(titles).to_have_text(["Another question", "Arithmetic"])

    delete = items.nth(0).get_by_test_id("chat-delete")
    delete.click()
    expect(delete).to_have_text("Delete?")  # the first click only asks
    delete.click()
    expect(items).to_have_count(1)
    expect(items.nth(0)).to_have_attribute("data-session-id", first_session)
    assert session_of(page) == first_session  # the deleted chat was on screen
    expect(page.get_by_test_id("user-message")).to_have_text([SHORT])
    page.reload()
    expect(items).to_have_count(1)


@pytest.mark.slow
def test_another_tab_sees_the_chat_and_follows_its_answer(server: str, page: Page) -> None:
    other = page.context.new_page()  # the same origin's storage: the same chats
    other.goto(server)
    page.goto(server)
    send(page, LONG)
    wait_for_words(answers(page).nth(0), 5)
    session = session_of(page)
    item = other.get_by_test_id("chat-item").filter(has_text=LONG)
    expect(item).to_have_attribute("data-session-id", session)
    item.get_by_test_id("chat-open").click()
    followed = answers(other).nth(0)
    expect(followed).to_have_attribute("data-status", "streaming")
    wait_for_words(followed, 30)  # live in this tab too, as a viewer
    page.get_by_test_id("stop-button").click()
    expect(answers(page).nth(0)).to_have_attribute("data-status", "stopped")
    expect(followed).to_have_attribute("data-status", "stopped")
    assert expected_answer(LONG).startswith(text_of(followed))
    other.close()


def canned_stream(stream_id: str, finish_reason: str, outcome: str | None) -> str:
    """An SSE body as the server sends it: role chunk, two pieces, the ending."""

    def chunk(delta: dict[str, str], finish: str | None, extra: dict[str, Any]) -> str:
        body = {"id": stream_id, "object": "chat.completion.chunk", "created": 0, "model": "m"}
        body["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
        return json.dumps({**body, **extra})

    ending = {"jarvis": {"outcome": outcome}} if outcome else {}
    return (
        f"id: {stream_id}:0\ndata: {chunk({'role': 'assistant'}, None, {})}\n\n"
        f"id: {stream_id}:1\ndata: {chunk({'content': 'Half an'}, None, {})}\n\n"
        f"id: {stream_id}:2\ndata: {chunk({'content': ' answer'}, None, {})}\n\n"
        f"data: {chunk({}, finish_reason, ending)}\n\ndata: [DONE]\n\n"
    )


@pytest.mark.parametrize(
    ("finish_reason", "outcome", "status"),
    [
        ("stop", "superseded", "superseded"),  # a cut stream's finish_reason is plain "stop"
        ("stop", "stopped", "stopped"),
        ("stop", None, "done"),
        ("superseded", None, "done"),  # finish_reason alone never names an early end
        ("length", None, "done"),
    ],
)
def test_the_ending_is_read_from_jarvis_outcome_only(
    server: str, page: Page, finish_reason: str, outcome: str | None, status: str
) -> None:
    stream_id = "chatcmpl-canned"
    page.route(
        re.compile(r"/v1/chat/completions$"),
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream", "X-Stream-Id": stream_id},
            body=canned_stream(stream_id, finish_reason, outcome),
        ),
    )
    page.goto(server)
    send(page, SHORT)
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", status)
    assert text_of(answer) == "Half an answer"


def test_a_tab_of_the_page_before_chats_were_kept_keeps_its_chat(server: str, page: Page) -> None:
    page.goto(server)
    away_and_back(
        page,
        server,
        """
            localStorage.clear();
            sessionStorage.clear();
            sessionStorage.setItem("jarvis-trio.chat.v1", JSON.stringify({
                sessionId: "web-oldtab", apiKey: "",
                turns: [{role: "user", text: "old prompt"},
                        {role: "assistant", text: "old answer", status: "done"}]}));
        """,
    )
    expect(page.get_by_test_id("user-message")).to_have_text(["old prompt"])
    assert text_of(answers(page).nth(0)) == "old answer"
    assert session_of(page) == "web-oldtab"
    expect(page.get_by_test_id("chat-item")).to_have_attribute("data-session-id", "web-oldtab")
    expect(page.get_by_test_id("chat-open")).to_have_text("old prompt")


@pytest.fixture
def full_server() -> Iterator[str]:
    yield from serve(JARVIS_MAX_STREAMS="1")


def test_a_full_gateway_is_shown_on_the_answer_and_the_next_prompt_is_served(
    full_server: str, page: Page
) -> None:
    """Another client holds the only slot: the page shows the gateway's own 429, not a
    stream that never starts; once the slot is free its next prompt is served."""
    page.goto(full_server)
    body = {"prompt": LONG, "stream": True}
    with (
        httpx.Client(base_url=full_server, timeout=10) as holder,
        holder.stream("POST", "/v1/chat/completions", json=body) as held,
    ):
        lines = held.iter_lines()  # kept: a dropped generator would close the stream
        next(lines)
        send(page, SHORT)
        refused = answers(page).nth(0)
        expect(refused).to_have_attribute("data-status", "error")
        expect(refused.locator(".error")).to_contain_text("HTTP 429")
        expect(refused.locator(".error")).to_contain_text("The gateway is full")
        expect(refused.locator(".error")).to_contain_text("Try again in 1 s")
    send(page, SHORT)
    expect(answers(page).last).to_have_attribute("data-status", "done")


# -- agent mode: the server runs the model's tool calls, shown as steps of the answer


@pytest.fixture(scope="module")
def tools_server() -> Iterator[str]:
    """The gateway on the embedded model with the demo tools (as `make run`), words unmarked."""
    yield from serve("--backend", "sim", "--demo-tools", JARVIS_SIM_MARK_TOKENS="false")


def steps(page: Page) -> Locator:
    return page.get_by_test_id("tool-step")


@pytest.mark.slow
def test_agent_mode_shows_a_tool_call_as_a_step_kept_across_a_reload(
    tools_server: str, page: Page
) -> None:
    page.goto(tools_server)
    toggle = page.get_by_test_id("agent-toggle")
    expect(toggle).not_to_be_checked()
    body = sent_body(page, lambda: send(page, "What is 2+2?"))
    assert "jarvis" not in body  # agent mode only when ticked
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
    expect(steps(page)).to_have_count(0)

    toggle.check()
    prompt = 'use add {"a": 2, "b": 3}'
    body = sent_body(page, lambda: send(page, prompt))
    assert body["jarvis"] == {"agent": True}
    answer = answers(page).nth(1)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".text")).to_have_text("Done: add returned 5.0.")
    step = answer.get_by_test_id("tool-step")
    expect(step).to_have_count(1)
    expect(step).to_have_attribute("data-status", "ok")
    expect(step.locator("summary")).to_contain_text("add")
    expect(step.locator(".step-result")).to_be_hidden()  # collapsed until opened
    step.locator("summary").click()
    expect(step.locator(".step-result pre")).to_have_text(re.compile(r"5(\.0)?"))
    expect(step.locator(".step-arguments pre")).to_contain_text('"a": 2')

    page.reload()  # the steps and the switch are the chat's, kept with it
    expect(page.get_by_test_id("agent-toggle")).to_be_checked()
    expect(steps(page)).to_have_count(1)
    expect(steps(page).nth(0)).to_have_attribute("data-status", "ok")
    ARTIFACTS.mkdir(exist_ok=True)
    steps(page).nth(0).locator("summary").click()
    page.screenshot(path=ARTIFACTS / "chat-agent.png", full_page=True)

    page.get_by_test_id("new-chat-button").click()  # a new chat starts with it off
    expect(page.get_by_test_id("agent-toggle")).not_to_be_checked()


def test_stop_during_a_tool_call_shows_the_step_cancelled(tools_server: str, page: Page) -> None:
    page.goto(tools_server)
    page.get_by_test_id("agent-toggle").check()
    send(page, 'use sleep {"seconds": 30}')
    answer = answers(page).nth(0)
    step = answer.get_by_test_id("tool-step")
    expect(step).to_have_attribute("data-status", "running")
    with page.expect_response(re.compile(r"/v1/sessions/.+/cancel$")) as cancel:
        page.get_by_test_id("stop-button").click()
    assert cancel.value.json()["result"] == "finished_cleanly"
    expect(answer).to_have_attribute("data-status", "stopped")
    expect(step).to_have_attribute("data-status", "cancelled")
    expect(step.locator("summary")).to_contain_text("cancelled")
    assert httpx.get(f"{tools_server}/healthz").json()["live_streams"] == 0
    requests = httpx.get(f"{tools_server}/v1/requests").json()["data"]
    assert [r for r in requests if r["session_id"] == session_of(page)] == []
    page.reload()  # still cancelled when the chat is read back
    expect(steps(page).nth(0)).to_have_attribute("data-status", "cancelled")


def test_a_failed_call_is_an_error_step_and_its_result_is_text(
    tools_server: str, page: Page
) -> None:
    page.goto(tools_server)
    page.get_by_test_id("agent-toggle").check()
    payload = "<img src=x onerror=alert(1)>"
    send(page, 'use add {"a": "' + payload + '", "b": 3}')  # not a number: the tool fails
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    step = answer.get_by_test_id("tool-step")
    expect(step).to_have_attribute("data-status", "error")
    expect(step.locator("summary")).to_contain_text("error")
    step.locator("summary").click()
    expect(step.locator(".step-result pre")).to_contain_text(payload)  # shown, as text
    expect(step.locator(".step-arguments pre")).to_contain_text(payload)
    expect(answer.locator("img")).to_have_count(0)  # nothing of it became an element


@pytest.mark.slow
def test_a_refresh_during_a_tool_call_replays_the_step_once(tools_server: str, page: Page) -> None:
    page.goto(tools_server)
    page.get_by_test_id("agent-toggle").check()
    send(page, 'use sleep {"seconds": 5}')
    expect(steps(page).nth(0)).to_have_attribute("data-status", "running")
    # The stored step is kept, and the viewer's replay from the stream's start sends its
    # tool_call_started again: shown once all the same.
    away_and_back(
        page,
        tools_server,
        "const chat = loadChat(); const turn = chat.turns[1];"
        "turn.lastEventId = null; turn.seq = 0; turn.text = ''; turn.tokens = 0;"
        "if (turn.steps.length !== 1) throw new Error('no stored step');"
        "saveChat(chat);",
    )
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "done")
    expect(answer.locator(".text")).to_have_text(re.compile(r"^Done: sleep returned"))
    expect(steps(page)).to_have_count(1)
    expect(steps(page).nth(0)).to_have_attribute("data-status", "ok")


def test_agent_mode_on_a_server_without_tools_says_so_and_unticks(server: str, page: Page) -> None:
    page.goto(server)
    page.get_by_test_id("agent-toggle").check()
    with page.expect_response(re.compile(r"/v1/chat/completions$")) as response:
        send(page, SHORT)
    assert response.value.status == 400
    answer = answers(page).nth(0)
    expect(answer).to_have_attribute("data-status", "error")
    expect(answer.locator(".error")).to_contain_text("no tools")
    expect(page.get_by_test_id("agent-toggle")).not_to_be_checked()
    body = sent_body(page, lambda: answer.get_by_test_id("regenerate-button").click())
    assert "jarvis" not in body
    expect(answers(page).nth(0)).to_have_attribute("data-status", "done")
