"""The chat page (``GET /``) in a real browser: Debian's Chromium driven by Playwright.

The server is a real ``jarvis-trio serve`` process on the embedded model with
marked tokens (every word carries its answer's ``~xxxx`` mark), so "no token of
the first answer in the second" is a plain text check. The sim is
deterministic, so a finished answer is compared with the exact text it must be.

These tests are synchronous (Playwright's sync API); each uses a fresh browser
context, so a fresh sessionStorage and session id.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from jarvis_trio.backends.base import ChatTurn, GenerationRequest
from jarvis_trio.backends.sim import MODEL_ID, sim_pieces
from jarvis_trio.testing import running_process

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
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


def serve(**env: str) -> Iterator[str]:
    argv = [str(Path(sys.executable).parent / "jarvis-trio"), "serve", "--port", "0"]
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
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 900, "height": 900})
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
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


def away_and_back(page: Page, server: str, edit_storage: str) -> None:
    """Leave the page (it saves its state as it goes), run ``edit_storage`` on the
    tab's sessionStorage (``STORE`` is the page's key), then load the page again."""
    page.goto(f"{server}/healthz")
    page.evaluate(edit_storage.replace("STORE", '"jarvis-trio.chat.v1"'))
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
        """() => {
            const saved = JSON.parse(sessionStorage.getItem(STORE));
            const turn = saved.turns[1];
            turn.text = ""; turn.seq = 0; turn.lastEventId = null; turn.tokens = 0;
            sessionStorage.setItem(STORE, JSON.stringify(saved));
        }""",
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
        """() => sessionStorage.setItem(STORE, JSON.stringify(
            {sessionId: "bad id with spaces", apiKey: "", turns: []}))""",
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
        """() => {
            const saved = JSON.parse(sessionStorage.getItem(STORE));
            saved.turns[1].status = "streaming";  // an older answer left streaming
            saved.turns.push({role: "user", text: "a prompt the server never saw"});
            saved.turns.push({role: "assistant", text: "", status: "streaming", streamId: null,
                seq: 0, tokens: 0, sentAt: Date.now(), ttftMs: null, firstAt: null,
                lastAt: null, error: "", lastEventId: null, requestId: "web-never-sent"});
            sessionStorage.setItem(STORE, JSON.stringify(saved));
        }""",
    )
    first, lost = answers(page).nth(0), answers(page).nth(1)
    expect(lost).to_have_attribute("data-status", "error")
    expect(lost.locator(".error")).to_contain_text("lost in the refresh")
    assert text_of(lost) == ""
    expect(first).to_have_attribute("data-status", "superseded")  # only the newest is live
    assert text_of(first) == expected_answer(SHORT)
    expect(page.get_by_test_id("stop-button")).to_be_disabled()


@pytest.fixture
def full_server() -> Iterator[str]:
    yield from serve(JARVIS_MAX_STREAMS="1")


def test_a_full_gateway_is_shown_on_the_answer_and_the_next_prompt_is_served(
    full_server: str, page: Page
) -> None:
    """Another client holds the only slot: the page shows the 429's message, not a stream
    that never starts; once the slot is free its next prompt is served."""
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
        expect(refused.locator(".error")).to_contain_text("The gateway is full")
    send(page, SHORT)
    served = answers(page).nth(1)
    expect(served).to_have_attribute("data-status", "done")
    assert text_of(served) == expected_answer(SHORT)
