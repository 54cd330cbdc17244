"""The pure part of the distributed registry: names, messages, fencing and lease arithmetic.

Like :mod:`jarvis_trio.rules`, this module does no I/O and reads no clock: the
Redis edge (:mod:`jarvis_trio.registry.redis`) passes values in and carries
out what comes back.

Theory of operation
-------------------
Every request of a session takes a *generation* from Redis, a number that only
grows (an INCR, floored at Redis's clock in microseconds so that it keeps
growing even after a Redis restart that lost the data). The newest generation
is the only one allowed to stream:

* **Claim.** The request's generation is taken and ``cancel <session> <gen>``
  is published. Every process cancels its streams of that session with an
  older generation (reason ``superseded``, the usual cancellation path). A Stop
  claims a generation too, and publishes ``stop`` instead (reason ``stopped``);
  it then waits for the lease like a request would, and gives it back at once.
* **Take.** Before it reaches the model, the request takes the session's
  *lease* (a key holding its generation, with an expiry). While an older
  generation holds it, the request waits for that holder's ``finished``
  message, or the lease's expiry, but never past its join budget; then it
  takes the lease anyway (a timed-out join, as in one process).
* **Renew.** The live stream renews its lease every third of the lease time.
  A renewal that finds a newer generation stops the stream: a stream that
  missed the cancel message still stops within one renewal interval.
* **Release.** When the stream is over, it deletes the lease (only if it still
  holds it) and publishes ``finished <session> <gen>``.

A worker that crashes stops renewing; its lease expires within the lease time,
and the session is usable again.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
from dataclasses import dataclass

KEY_PREFIX = "jarvis:"
CHANNEL = KEY_PREFIX + "registry"
SECRET_KEY = KEY_PREFIX + "secret"
# A session's generation counter outlives its last request by this long, so that a
# client coming back within a day still gets a larger number without Redis's clock.
GENERATION_TTL_MS = 24 * 3600 * 1000
# A waiting request looks again this often even without a ``finished`` message (a lost
# message, a holder that crashed and whose lease expired).
POLL_SECONDS = 0.1
# Messages longer than this are not ours.
MAX_MESSAGE_CHARS = 256
# A generation is microseconds since 1970 plus claims: 16 digits now; 19 fit in 64 bits.
MAX_GENERATION_DIGITS = 19


class MessageKind(enum.StrEnum):
    CANCEL = "cancel"  # a newer generation was claimed: older streams are superseded
    STOP = "stop"  # a Stop claimed a newer generation: older streams are stopped
    FINISHED = "finished"  # the holder released its lease: a waiter may take it


@dataclass(frozen=True, slots=True)
class Message:
    kind: MessageKind
    session: str  # the session's digest (see :func:`session_digest`)
    generation: int
    worker: str  # who sent it, for logs


class TakeResult(enum.Enum):
    """What an attempt to take a session's lease found (the take script's reply)."""

    STALE = 0  # a newer generation was claimed: this request is superseded
    BUSY = 1  # an older generation still holds the lease
    TAKEN = 2  # the lease was free (or held by ourselves): it is ours
    FORCED = 3  # the join budget ran out: the lease was taken from its holder


@dataclass(frozen=True, slots=True)
class SessionKeys:
    generation: str
    lease: str


def session_digest(secret: bytes, owner: str, session_id: str) -> str:
    """An opaque, stable name for (owner, session): shared by every process that shares
    the secret, and never revealing the owner (which is derived from an API key)."""
    mac = hmac.new(secret, owner.encode() + b"\0" + session_id.encode(), hashlib.sha256)
    return mac.hexdigest()[:32]


def owner_label(secret: bytes, owner: str) -> str:
    """The owner's label in upstream ``X-Jarvis-Session`` headers, equal across processes."""
    return hmac.new(secret, b"owner\0" + owner.encode(), hashlib.sha256).hexdigest()[:16]


def keys_for(digest: str) -> SessionKeys:
    return SessionKeys(
        generation=f"{KEY_PREFIX}s:{digest}:gen", lease=f"{KEY_PREFIX}s:{digest}:lease"
    )


def encode(message: Message) -> str:
    """``<kind> <session> <generation> <worker>``. The claim script builds the same
    line in Lua for its cancel (it learns the generation only there)."""
    return f"{message.kind.value} {message.session} {message.generation} {message.worker}"


def decode(raw: str | bytes) -> Message | None:
    """The message in ``raw``, or ``None`` for anything that is not one of ours."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode()
        except UnicodeDecodeError:
            return None
    if len(raw) > MAX_MESSAGE_CHARS:
        return None
    parts = raw.split(" ")
    if len(parts) != 4:
        return None
    kind, session, generation, worker = parts
    try:
        parsed_kind = MessageKind(kind)
    except ValueError:
        return None
    # isascii: str.isdigit() also takes digits such as '²', which int() refuses.
    if not session or not worker or not (generation.isascii() and generation.isdigit()):
        return None
    if len(generation) > MAX_GENERATION_DIGITS:
        return None
    return Message(parsed_kind, session, int(generation), worker)


def must_end(message: Message, generation: int | None) -> bool:
    """Must a local stream holding ``generation`` end because of ``message``?

    Only a cancel or stop from a strictly newer generation ends it: a process
    receives its own messages too, and a stream's claim never cancels the stream.
    """
    return (
        message.kind is not MessageKind.FINISHED
        and generation is not None
        and message.generation > generation
    )


def stop_result(result: TakeResult, held: bool) -> str:
    """What a Stop that waited for the session's lease reports (the Stop endpoint's
    ``result``). ``held``: a stream held the lease when the Stop was claimed, or
    while it waited. Then the Stop saw it give the lease back within the budget, or
    gave up at the budget; or a newer request of the session overtook the Stop."""
    if result is TakeResult.STALE:
        return "superseded"
    if result is TakeResult.FORCED:
        return "join_timeout"
    return "finished_cleanly" if held else "nothing_live"


def take_result(reply: object) -> TakeResult:
    """The take script's integer reply as a :class:`TakeResult`."""
    if isinstance(reply, bool) or not isinstance(reply, int):
        raise ValueError(f"unexpected take reply {reply!r}")
    try:
        return TakeResult(reply)
    except ValueError:
        raise ValueError(f"unexpected take reply {reply!r}") from None


def lease_ms(lease_seconds: float) -> int:
    """The lease's expiry in milliseconds for ``SET ... PX`` (at least 1)."""
    return max(1, math.ceil(lease_seconds * 1000))


def renew_interval(lease_seconds: float) -> float:
    """How often a live stream renews its lease: a third of the lease, so that two
    renewals can fail (a slow Redis, a lost reply) before the lease expires."""
    return lease_seconds / 3


def next_look(now: float, deadline: float) -> float:
    """When a waiting request looks at the lease again without a message."""
    return min(deadline, now + POLL_SECONDS)


def must_force(now: float, deadline: float) -> bool:
    """Has the waiter's join budget run out, so that it takes the lease anyway?"""
    return now >= deadline
