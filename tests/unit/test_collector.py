"""The collector's settings after startup: startup's objects frozen, full collections spaced."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from jarvis_trio.collector import FULL_AFTER, settle_after_startup


@pytest.fixture
def restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored")
def test_startup_objects_are_frozen_and_full_collections_spaced() -> None:
    made_at_startup = [[i] for i in range(1000)]  # containers the collector tracks
    young, middle, oldest = gc.get_threshold()
    settle_after_startup()
    first = made_at_startup[0]
    assert not any(o is first for o in gc.get_objects())  # frozen: out of the collector's walk
    # Young and middle collections as CPython makes them (short pauses); full ones rarer.
    assert gc.get_threshold() == (young, middle, FULL_AFTER)
    assert oldest < FULL_AFTER
