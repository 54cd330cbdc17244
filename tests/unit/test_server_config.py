"""How the server meets its clients: a burst of connects is queued, not dropped, and an
idle connection outlives a client's pool expiry."""

from __future__ import annotations

import socket

import httpx

from jarvis_trio.server import bind_sockets, hypercorn_config


def test_a_burst_beyond_hypercorns_default_of_100_is_queued() -> None:
    sockets = bind_sockets("127.0.0.1", 0)
    (sock,) = sockets.insecure_sockets
    address = sock.getsockname()
    clients: list[socket.socket] = []
    try:
        for _ in range(300):  # nobody accepts: every one waits in the queue
            client = socket.create_connection(address, timeout=0.5)
            clients.append(client)
        assert len(clients) == 300
    finally:
        for client in clients:
            client.close()
        sock.close()


def test_an_idle_connection_outlives_the_pool_expiry_of_httpx_clients() -> None:
    """Closed at the same moment (5 s both, hypercorn's and httpx's defaults), a client
    that reuses its connection then loses its POST: "Server disconnected without sending
    a response" (2-9 of 2,000 requests in the storm benchmark)."""
    expiry = httpx.Limits().keepalive_expiry
    assert expiry is not None
    assert hypercorn_config("127.0.0.1", 0).keep_alive_timeout > expiry
