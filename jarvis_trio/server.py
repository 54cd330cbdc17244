"""Serving the app with hypercorn's trio worker, in-process."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import ExitStack
from functools import partial

import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.config import Sockets
from quart_trio import QuartTrio

from jarvis_trio import logs
from jarvis_trio.api import JarvisState
from jarvis_trio.tools import processes

# Connections the kernel queues for accept() (Linux caps it at net.core.somaxconn).
LISTEN_BACKLOG = 1024
# Seconds an idle client connection is kept open: past clients' pool expiry (httpx: 5 s),
# not much more (hypercorn holds some connections their client has left until then).
KEEP_ALIVE_TIMEOUT = 7.0


class _Config(HypercornConfig):
    """hypercorn's config, serving sockets bound beforehand (:func:`bind_sockets`)."""

    prebound: Sockets | None = None

    def create_sockets(self) -> Sockets:
        if self.prebound is not None:
            sockets, self.prebound = self.prebound, None
            return sockets
        return super().create_sockets()


def hypercorn_config(
    host: str, port: int, *, graceful_timeout: float = 1.0, sockets: Sockets | None = None
) -> HypercornConfig:
    config = _Config()
    config.prebound = sockets
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    # hypercorn listens with a backlog of 100: a burst of connects (a page of agents, a
    # load test) beyond that is dropped by the kernel, and a dropped SYN is retried only
    # after 1 s. Queued, they wait for the accept loop instead (docs/benchmarks.md).
    config.backlog = LISTEN_BACKLOG
    # hypercorn closes an idle kept-alive connection after 5 s, which is also httpx's (and
    # so the OpenAI SDK's) pool expiry: a client reusing its connection at that moment
    # gets "Server disconnected without sending a response" for a POST it will not retry
    # (seen in the storm benchmark, docs/benchmarks.md). The server waits longer.
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    # Through our own handler and format, not a second one of hypercorn's.
    config.errorlog = logging.getLogger("hypercorn.error")
    # Our own shutdown has ended every stream before this grace period starts; what
    # is left is idle kept-alive connections, which hypercorn would hold for the
    # whole period.
    config.graceful_timeout = graceful_timeout
    return config


def bind_sockets(host: str, port: int) -> Sockets:
    """Bind ``host:port`` and listen, before anything else starts: a busy port
    (``OSError`` with ``errno.EADDRINUSE``) is then found before the app logs
    ``server_ready``, and ``jarvis-trio serve`` can say so in one line."""
    config = hypercorn_config(host, port)
    sockets: Sockets = config.create_sockets()
    for sock in sockets.insecure_sockets:
        sock.listen(config.backlog)
    return sockets


async def serve(
    app: QuartTrio,
    host: str,
    port: int,
    *,
    sockets: Sockets | None = None,
    shutdown_trigger: trio.Event | None = None,
    handle_signals: bool = True,
    shutdown_timeout: float = 5.0,
    force_exit_after: float | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT/SIGTERM or ``shutdown_trigger``; ``started`` gets the bound URLs.

    On the way out every live stream is cancelled with reason ``shutdown`` and
    joined within the budget *before* hypercorn closes connections, so each
    client gets a clean final event. The whole way out takes at most
    ``shutdown_timeout`` seconds: our shutdown, then hypercorn's grace period.

    ``sockets`` (from :func:`bind_sockets`) are served instead of binding
    ``host:port`` anew.

    ``force_exit_after`` (for a process of its own: ``jarvis-trio serve``): if the
    process is still here that many seconds after the shutdown began, it exits.
    hypercorn shields its socket writes, so a client that has stopped reading can
    hold a write, and the process, forever, after every stream has ended.
    """
    if not handle_signals and shutdown_trigger is None:
        raise ValueError("serve() needs signals or a shutdown_trigger to ever stop")
    state: JarvisState = app.extensions["jarvis"]

    async def wait_for_shutdown() -> None:
        async with trio.open_nursery() as nursery:

            async def on_signal(signals: AsyncIterator[int]) -> None:
                async for signum in signals:
                    logs.event("shutdown_requested", signal=signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()

            async def on_trigger(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            if receiver is not None:
                nursery.start_soon(on_signal, receiver)
            if shutdown_trigger is not None:
                nursery.start_soon(on_trigger, shutdown_trigger)
        if force_exit_after is not None:
            watchdog = threading.Timer(force_exit_after, _force_exit, args=(force_exit_after,))
            watchdog.daemon = True
            watchdog.start()
        with trio.move_on_after(shutdown_timeout - graceful):
            await state.manager.shutdown()

    graceful = min(1.0, shutdown_timeout / 4)
    config = hypercorn_config(host, port, graceful_timeout=graceful, sockets=sockets)
    with ExitStack() as stack:
        # Our handlers are in place before anything is served: a SIGTERM right after
        # `server_listening` must not meet Python's default action, which kills the
        # process with its streams unended and its MCP servers left running.
        receiver = (
            stack.enter_context(trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM))
            if handle_signals
            else None
        )
        async with trio.open_nursery() as nursery:
            binds: list[str] = await nursery.start(
                partial(hypercorn.trio.serve, app, config, shutdown_trigger=wait_for_shutdown)
            )
            for url in binds:
                logs.event("server_listening", url=url, backend=state.backend.name)
            task_status.started(binds)


def _force_exit(after: float) -> None:
    """Runs in the watchdog thread: every stream was ended already; what is left is a
    socket write to a client that reads nothing."""
    logs.event("shutdown_forced", level=logging.WARNING, after_seconds=after)
    processes.kill_all_now()  # no MCP server outlives the gateway
    logging.shutdown()
    os._exit(0)
