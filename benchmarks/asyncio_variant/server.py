"""Serving the app with uvicorn on a socket we bind ourselves (so ``--port 0`` works).

uvicorn runs with its defaults where the notes' server had them (it was started
as ``uvicorn src.jarvis.server:app``): the h11 protocol, no graceful-shutdown
timeout. So on SIGTERM uvicorn waits for every response in progress to end,
and then ``asyncio.run`` waits for every executor thread, a thread blocked on a
silent upstream included: the process does not exit while such a thread lives.
"""

from __future__ import annotations

import socket

import uvicorn
from starlette.types import ASGIApp

from jarvis_trio import logs


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    return sock


def serve(app: ASGIApp, host: str, port: int, *, backend: str, lifespan: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn's signal handling); ``lifespan``: run the
    app's startup (the MCP servers of agent mode) before listening."""
    sock = bind(host, port)
    address, bound_port = sock.getsockname()[:2]
    url = f"http://{f'[{address}]' if ':' in address else address}:{bound_port}"
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        ws="none",
        lifespan="on" if lifespan else "off",
        access_log=False,
        log_config=None,  # uvicorn's messages go through our handler (jarvis_trio.logs)
    )
    logs.event("server_listening", url=url, backend=backend)
    uvicorn.Server(config).run(sockets=[sock])
