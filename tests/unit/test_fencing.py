"""The pure part of the Redis registry: names, messages, fencing and lease arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from jarvis_trio.config import Settings
from jarvis_trio.registry.fencing import (
    CHANNEL,
    MAX_MESSAGE_CHARS,
    POLL_SECONDS,
    Message,
    MessageKind,
    TakeResult,
    decode,
    encode,
    keys_for,
    lease_ms,
    must_end,
    must_force,
    next_look,
    owner_label,
    renew_interval,
    session_digest,
    stop_result,
    take_result,
)

SECRET = b"0123456789abcdef"


def test_session_digest_is_stable_and_tells_owners_and_sessions_apart() -> None:
    digest = session_digest(SECRET, "key-aaaa", "demo")
    assert digest == session_digest(SECRET, "key-aaaa", "demo")
    assert len(digest) == 32
    assert digest != session_digest(SECRET, "key-bbbb", "demo")
    assert digest != session_digest(SECRET, "key-aaaa", "demo2")
    # The separator keeps ("a", "bc") and ("ab", "c") apart.
    assert session_digest(SECRET, "a", "bc") != session_digest(SECRET, "ab", "c")
    # Another secret (another deployment) gives other names.
    assert digest != session_digest(b"another secret!!", "key-aaaa", "demo")


def test_owner_label_hides_the_owner_and_is_not_the_session_digest() -> None:
    label = owner_label(SECRET, "key-aaaa")
    assert label == owner_label(SECRET, "key-aaaa")
    assert "key-aaaa" not in label and len(label) == 16
    assert label != owner_label(SECRET, "key-bbbb")
    assert label not in session_digest(SECRET, "key-aaaa", "demo")


def test_keys_of_a_session_are_namespaced() -> None:
    keys = keys_for("d" * 32)
    assert keys.generation == "jarvis:s:" + "d" * 32 + ":gen"
    assert keys.lease == "jarvis:s:" + "d" * 32 + ":lease"
    assert CHANNEL.startswith("jarvis:")


def test_message_encoding_is_the_line_the_claim_script_publishes() -> None:
    message = Message(MessageKind.CANCEL, "d" * 32, 1796115265123456, "4242")
    # CLAIM_SCRIPT builds: 'cancel ' .. digest .. ' ' .. generation .. ' ' .. worker
    assert encode(message) == f"cancel {'d' * 32} 1796115265123456 4242"
    assert decode(encode(message)) == message
    assert decode(encode(message).encode()) == message


@given(
    kind=st.sampled_from(MessageKind),
    session=st.text("0123456789abcdef", min_size=1, max_size=32),
    generation=st.integers(min_value=0, max_value=2**62),
    worker=st.text("0123456789", min_size=1, max_size=10),
)
def test_every_message_survives_encoding(
    kind: MessageKind, session: str, generation: int, worker: str
) -> None:
    message = Message(kind, session, generation, worker)
    assert decode(encode(message)) == message


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "cancel",
        "cancel abc 12",
        "cancel abc 12 w extra",
        "start abc 12 w",
        "cancel abc -12 w",
        "cancel abc 1.5 w",
        "cancel  12 w",
        b"\xff\xfe",
        "cancel " + "a" * MAX_MESSAGE_CHARS + " 1 w",
    ],
)
def test_anything_else_on_the_channel_is_ignored(raw: str | bytes) -> None:
    assert decode(raw) is None


@pytest.mark.parametrize("kind", [MessageKind.CANCEL, MessageKind.STOP])
def test_only_a_newer_generation_ends_a_stream(kind: MessageKind) -> None:
    message = Message(kind, "s", 10, "w")
    assert must_end(message, 9)
    assert not must_end(message, 10)  # its own claim
    assert not must_end(message, 11)  # a newer one, whose claim arrived first
    assert not must_end(message, None)  # a request without a claim
    assert not must_end(Message(MessageKind.FINISHED, "s", 10, "w"), 9)


def test_what_a_stop_reports_after_waiting_for_the_lease() -> None:
    assert stop_result(TakeResult.TAKEN, held=False) == "nothing_live"
    assert stop_result(TakeResult.TAKEN, held=True) == "finished_cleanly"
    assert stop_result(TakeResult.FORCED, held=True) == "join_timeout"
    assert stop_result(TakeResult.STALE, held=True) == "superseded"
    assert stop_result(TakeResult.STALE, held=False) == "superseded"


def test_take_replies_map_to_results() -> None:
    assert [take_result(n) for n in (0, 1, 2, 3)] == [
        TakeResult.STALE,
        TakeResult.BUSY,
        TakeResult.TAKEN,
        TakeResult.FORCED,
    ]
    for bad in (4, -1, "2", None, True):
        with pytest.raises(ValueError, match="take"):
            take_result(bad)


def test_lease_arithmetic() -> None:
    assert lease_ms(5.0) == 5000
    assert lease_ms(0.3) == 300
    assert lease_ms(0.0001) == 1  # never 0, which Redis refuses
    assert lease_ms(1.0001) == 1001  # rounded up: never shorter than asked
    assert renew_interval(6.0) == 2.0  # two renewals may fail before it expires


def test_a_waiter_looks_again_soon_but_never_past_its_deadline() -> None:
    assert next_look(now=10.0, deadline=12.0) == 10.0 + POLL_SECONDS
    assert next_look(now=11.95, deadline=12.0) == 12.0
    assert not must_force(now=11.99, deadline=12.0)
    assert must_force(now=12.0, deadline=12.0)


def test_a_message_with_odd_digits_is_not_ours() -> None:
    """Found in review: '²' passed str.isdigit() and int() then killed the listener."""
    assert decode("cancel abc \u00b2 w") is None
    assert decode("cancel abc " + "9" * 40 + " w") is None
    assert decode(b"\xff\xfe") is None


def test_an_empty_registry_url_means_in_memory() -> None:
    assert Settings(registry_url="").registry_url is None
