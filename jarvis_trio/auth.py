"""Who is asking: API keys compared in constant time, and the loopback-only rule.

With keys configured, every ``/v1`` request needs ``Authorization: Bearer <key>``.
With none, auth is off, but only for loopback traffic (as Ollama does): a
request that arrives on or from a non-loopback address is refused unless
``allow_unauthenticated`` says otherwise. Each key is an *owner*; session ids
live inside their owner, so one key can never see or cancel another's streams.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Sequence

from jarvis_trio.config import is_loopback
from jarvis_trio.errors import AuthenticationFailed, Forbidden

ANONYMOUS = "anonymous"


def owner_of_key(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:16]


# Per process: upstream servers see a stable label per owner, never anything
# derived from an API key alone (a plain hash of a weak key can be brute-forced).
_LABEL_SECRET = secrets.token_bytes(16)


@functools.lru_cache(maxsize=1024)  # owners are few; requests with a session many
def owner_label(owner: str) -> str:
    """What an upstream may see of ``owner`` (in ``X-Jarvis-Session``): an HMAC."""
    return hmac.new(_LABEL_SECRET, owner.encode(), "sha256").hexdigest()[:16]


class Authenticator:
    def __init__(self, keys: Sequence[str], *, allow_unauthenticated: bool = False) -> None:
        self._keys = tuple(k.encode() for k in keys)
        self._owners = tuple(owner_of_key(k) for k in keys)
        self.allow_unauthenticated = allow_unauthenticated

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def owner(
        self,
        authorization: str | None,
        *,
        server_host: str | None,
        client_host: str | None,
    ) -> str:
        """The owner id for this request, or an auth error."""
        if not self._keys:
            local = all(h is not None and is_loopback(h) for h in (server_host, client_host))
            if local or self.allow_unauthenticated:
                return ANONYMOUS
            raise Forbidden(
                "No API keys are configured, so only loopback requests are served. "
                "Set JARVIS_API_KEYS.",
                code="auth_not_configured",
            )
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise AuthenticationFailed(
                "Missing API key: send 'Authorization: Bearer <key>'.", code="missing_api_key"
            )
        candidate = given.strip().encode()
        match = -1
        for index, key in enumerate(self._keys):
            # Compare against every key, so timing says nothing about which matched.
            if hmac.compare_digest(candidate, key):
                match = index
        if match < 0:
            raise AuthenticationFailed("Invalid API key.", code="invalid_api_key")
        return self._owners[match]
