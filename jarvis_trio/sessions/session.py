"""The manager's records: one per session, one per stream it knows of."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from jarvis_trio.registry import Claim
from jarvis_trio.rules import SessionRules, Wait
from jarvis_trio.sessions.lease import Lease
from jarvis_trio.streams import Stream

# (owner, session id). Requests without a session id get a key of their own.
SessionKey = tuple[str, str]


@dataclass(eq=False)
class Entry:
    """The manager's private record of one stream; the stream itself is only the pipe."""

    stream: Stream
    session: Session
    # With a registry: the request's place in its session across processes.
    claim: Claim | None = None
    # Set when the rules made the request wait for the session's previous stream.
    wait: Wait | None = None
    # Taken before the model is asked, given back once the stream is released.
    lease: Lease | None = None


@dataclass(eq=False)
class Session:
    key: SessionKey
    label: str | None  # the client's X-Session-Id, for logs
    rules: SessionRules
    # Every stream the rules know of (waiting, live, dying, zombie), by id.
    entries: dict[str, Entry] = field(default_factory=dict)
    nursery: trio.Nursery | None = None
    # Streams started before the session's nursery was open.
    deferred: list[Entry] = field(default_factory=list)
    closed: trio.Event = field(default_factory=trio.Event)
    # The session's latest request, whose log viewers read (None without a session id).
    newest: Stream | None = None
    # With a registry: the session's digest, and the newest generation seen here.
    digest: str | None = None
    newest_generation: int = 0
