"""JARVIS_THREAD_STACK_KIB: set before trio (and so its thread cache) starts a thread."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio

from jarvis_trio import cli


@pytest.mark.parametrize("kib", [None, 256])
def test_serve_sets_the_worker_thread_stack_size_before_trio_runs(
    monkeypatch: pytest.MonkeyPatch, kib: int | None
) -> None:
    seen: list[int] = []

    def fake_run(*args: Any, **kwargs: Any) -> None:
        # trio's thread cache starts its threads (threading.Thread, no size of their own)
        # only once trio runs: every one of them gets this size.
        seen.append(threading.stack_size())

    monkeypatch.setattr(trio, "run", fake_run)
    if kib is not None:
        monkeypatch.setenv("JARVIS_THREAD_STACK_KIB", str(kib))
    try:
        assert cli.main(["serve", "--backend", "sim", "--port", "0"]) == 0
    finally:
        threading.stack_size(0)
    assert seen == [0 if kib is None else kib * 1024]
