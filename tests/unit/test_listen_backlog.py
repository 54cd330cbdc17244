"""The listening socket queues a burst of connects instead of dropping them."""

from __future__ import annotations

import socket

from jarvis_trio.server import bind_sockets


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
