"""The collector's settings after startup: startup's objects frozen, young collections spaced."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jarvis_trio.collector import YOUNG_THRESHOLD, settle_after_startup


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_startup_objects_are_frozen_and_young_collections_spaced() -> None:
    made_at_startup = [[i] for i in range(1000)]  # containers the collector tracks
    _, older, oldest = gc.get_threshold()
    settle_after_startup()
    first = made_at_startup[0]
    assert not any(o is first for o in gc.get_objects())  # frozen: out of the collector's walk
    assert gc.get_threshold() == (YOUNG_THRESHOLD, older, oldest)
    assert YOUNG_THRESHOLD > 700  # above CPython's default, which promoted writes in flight
