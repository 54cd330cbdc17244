"""Debian's headless Chromium for the browser tests, driven by Playwright (never a
downloaded browser)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM = "/usr/bin/chromium"
# No sandbox (root in CI), no GPU, and nothing that reaches out to the network.
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def launch(*extra_args: str) -> Iterator[Browser]:
    """A browser for a fixture to yield from; fails (never skips) when Chromium is missing."""
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=[*ARGS, *extra_args]
        )
        yield browser
        browser.close()
