"""The cancel guarantee over TLS: an ``https://`` upstream's socket is shut down too.

The certificate in ``tests/trio/data/localhost-tls.pem`` is self-signed for 127.0.0.1 (valid
until 2126); the client trusts it through ``SSL_CERT_FILE``, which httpx honours.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
import trio

from jarvis_trio.backends.ollama import OllamaBackend
from jarvis_trio.generation import Output
from tests.support.fakes import job
from tests.support.helpers import deadline

CERT = Path(__file__).parent / "data" / "localhost-tls.pem"


class SilentTlsUpstream:
    """Accepts one TLS connection, reads the request, says nothing, records the EOF."""

    def __init__(self, *, handshake_delay: float = 0.0) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(CERT)
        self._context = context
        self._handshake_delay = handshake_delay
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.port = self.listener.getsockname()[1]
        self.requested = threading.Event()
        self.eof_at: float | None = None
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        time.sleep(self._handshake_delay)  # a slow TLS peer
        raw.settimeout(10)  # gives up in the end, so a broken client cannot hang the suite
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn:
                conn.recv(65536)
                self.requested.set()
                while conn.recv(65536):
                    pass
                self.eof_at = time.monotonic()
        except OSError:
            self.eof_at = time.monotonic()

    def close(self) -> None:
        self.listener.close()
        self._thread.join(15)


class Nowhere:
    def opened(self, model: str | None = None) -> None:
        raise AssertionError("the upstream never answers")

    async def send(self, text: Output) -> None:
        raise AssertionError("the upstream never answers")


@pytest.mark.parametrize("handshake_delay", [0.0, 3.0], ids=["silent-read", "in-handshake"])
@deadline(30)
async def test_cancel_shuts_a_tls_upstream_down(
    monkeypatch: pytest.MonkeyPatch, handshake_delay: float
) -> None:
    """Found in review: TLS wraps the connected socket in a new object and detaches the
    old one, so a shutdown registered on the plain socket reached nothing; a cancelled
    stream on a silent ``https://`` upstream kept its thread until the upstream spoke."""
    monkeypatch.setenv("SSL_CERT_FILE", str(CERT))
    upstream = SilentTlsUpstream(handshake_delay=handshake_delay)
    limiter = trio.CapacityLimiter(4)
    backend = OllamaBackend(
        f"https://127.0.0.1:{upstream.port}", limiter=limiter, connect_timeout=20.0
    )
    try:
        started = time.monotonic()
        with trio.move_on_after(0.5) as scope:
            await backend.generate(job("x"), Nowhere())
        assert scope.cancelled_caught
        returned = time.monotonic() - started
        assert returned < 2.0, f"the reader thread returned after {returned:.1f} s"
        assert limiter.borrowed_tokens == 0
        if not handshake_delay:
            assert upstream.requested.is_set()
            await trio.to_thread.run_sync(upstream._thread.join, 5)
            assert upstream.eof_at is not None and upstream.eof_at - started < 2.0
    finally:
        await backend.aclose()
        upstream.close()
