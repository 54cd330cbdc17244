"""One configured MCP server: its process (or HTTP connection), its session, its restarts.

:meth:`McpServer.run` is the server's whole life, in one task of the host's nursery:
connect, ``initialize``, list the tools, serve calls in a nursery of its own, and when
the connection ends (the process died, or it piled up abandoned calls) start again after
a backoff. Cancel that task and everything of the server ends within the stop bounds.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import mcp_types
import trio
from mcp import ClientSession
from mcp.client.session import IncomingMessage
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

from jarvis_trio import logs
from jarvis_trio.tools.config import HttpServer, StdioServer
from jarvis_trio.tools.ledger import Ledger
from jarvis_trio.tools.stdio import open_stdio

CLIENT_INFO = mcp_types.Implementation(name="jarvis-trio", version="0.1.0")

State = Literal["starting", "ready", "down"]
Streams = tuple[
    ReadStream[SessionMessage | Exception], WriteStream[SessionMessage], trio.Process | None
]


@dataclass(frozen=True)
class ServerLimits:
    init_timeout: float = 10.0
    """Seconds for a server to start and answer ``initialize`` and ``tools/list``."""
    abandon_threshold: int = 3
    """Abandoned calls (and late answers to cancelled ones) that make a server restart."""
    stop_grace: float = 0.5
    """Seconds a stdio server has to exit after its stdin closes; then SIGTERM."""
    kill_after: float = 0.5
    """Seconds between SIGTERM and SIGKILL."""
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    healthy_after: float = 30.0
    """A server that ran this long restarts after the initial backoff again."""


@dataclass(eq=False)  # hashed by identity: the server keeps a set of them
class PendingCall:
    """A ``tools/call`` running in the server's nursery; ``done`` is set however it ends."""

    tool: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)
    result: mcp_types.CallToolResult | None = None
    error: Exception | None = None
    ended_by: str | None = None  # why the server's session ended under it, if it did


class McpServer:
    def __init__(
        self,
        name: str,
        config: StdioServer | HttpServer,
        limits: ServerLimits,
        on_tools_changed: Callable[[], None],
    ) -> None:
        self.name = name
        self.config = config
        self.limits = limits
        self.state: State = "starting"
        self.tools: list[mcp_types.Tool] = []  # the last listing, kept while it restarts
        self.pid: int | None = None
        self.starts = 0
        self.abandoned = 0  # since this start
        self._on_tools_changed = on_tools_changed
        self._session: ClientSession | None = None
        self._nursery: trio.Nursery | None = None
        self._restart = trio.Event()
        self._restart_reason = ""
        self._list_changed = trio.Event()
        self._ledger = Ledger(self._late_answer)
        self._pending: set[PendingCall] = set()
        self.ready = trio.Event()  # set at each start; a test's handle

    @property
    def transport(self) -> str:
        return "stdio" if isinstance(self.config, StdioServer) else "http"

    def start_call(self, tool: str, arguments: dict[str, Any] | None) -> PendingCall | None:
        """Start ``tools/call`` in the server's nursery; None when the server is not up."""
        if self._nursery is None or self._session is None or self._ledger.closed.is_set():
            return None
        call = PendingCall(tool)
        self._pending.add(call)
        self._nursery.start_soon(self._run_call, self._session, call, arguments)
        return call

    async def _run_call(
        self, session: ClientSession, call: PendingCall, arguments: dict[str, Any] | None
    ) -> None:
        try:
            with call.scope:
                call.result = await session.call_tool(call.tool, arguments)
        except Exception as exc:  # an MCPError, a result that fails its schema, ...
            call.error = exc
        finally:
            self._pending.discard(call)
            call.done.set()

    def note_abandoned(self) -> None:
        """A call gave up waiting for its cancel; enough of them restart the server."""
        self.abandoned += 1
        if self.abandoned >= self.limits.abandon_threshold and not self._restart.is_set():
            self._restart_reason = "abandoned_calls"
            self._restart.set()

    def _late_answer(self, tool: str) -> None:
        logs.event("tool_late_answer_dropped", server=self.name, tool=tool)
        self.note_abandoned()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve the server until cancelled; ``started`` after the first start worked or failed."""
        attempt = 0
        started = False

        def up() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()

        while True:
            began = trio.current_time()
            reason = await self._serve_once(up)
            up()
            if reason == "abandoned_calls":
                delay = 0.0
            else:
                if trio.current_time() - began >= self.limits.healthy_after:
                    attempt = 0
                delay = min(self.limits.backoff_max, self.limits.backoff_initial * 2**attempt)
                attempt += 1
            logs.event(
                "mcp_server_restart",
                server=self.name,
                reason=reason,
                attempt=attempt,
                delay_ms=round(delay * 1000),
            )
            await trio.sleep(delay)

    async def _serve_once(self, up: Callable[[], None]) -> str:
        """One start of the server, until its connection ends; returns why it ended."""
        self._restart = trio.Event()
        self._restart_reason = "exited"
        self.abandoned = 0
        ledger = self._ledger = Ledger(self._late_answer)
        reason = "shutdown"  # unless it ends by itself
        error: str | None = None
        process: trio.Process | None = None
        try:
            async with self._connect() as (read, write, process):
                pid = self.pid = None if process is None else process.pid
                self.starts += 1
                reader, writer = ledger.wrap(read, write)
                async with ClientSession(
                    reader, writer, message_handler=self._on_message, client_info=CLIENT_INFO
                ) as session:
                    with trio.fail_after(self.limits.init_timeout):
                        init = await session.initialize()
                        await self._list_tools(session)
                    logs.event(
                        "mcp_server_started",
                        server=self.name,
                        transport=self.transport,
                        pid=pid,
                        protocol=init.protocol_version,
                        tools=len(self.tools),
                    )
                    async with trio.open_nursery() as nursery:
                        self._session, self._nursery = session, nursery
                        self.state = "ready"
                        self.ready.set()
                        up()
                        nursery.start_soon(self._refresh_on_list_changed, session)
                        async with trio.open_nursery() as watch:
                            watch.start_soon(_set_on, self._restart, ledger.closed.wait)
                            await self._restart.wait()
                            watch.cancel_scope.cancel()
                        reason = self._restart_reason
                        for call in self._pending:
                            call.ended_by = reason
                        self._session = self._nursery = None
                        self.state = "down"
                        nursery.cancel_scope.cancel()
        except Exception as exc:
            reason, error = _classify(exc, spawned=self.pid is not None)
        finally:
            self._session = self._nursery = None
            self.state = "down"
            self.ready = trio.Event()
            logs.event(
                "mcp_server_exited",
                level=logging.INFO if reason == "shutdown" else logging.WARNING,
                server=self.name,
                pid=self.pid,
                returncode=None if process is None else process.returncode,
                reason=reason,
                error=error,
            )
            self.pid = None
        return reason

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[Streams]:
        if isinstance(self.config, StdioServer):
            async with open_stdio(
                self.config.command,
                self.config.args,
                self.config.env,
                self.config.cwd,
                stop_grace=self.limits.stop_grace,
                kill_after=self.limits.kill_after,
            ) as conn:
                yield conn.read_stream, conn.write_stream, conn.process
        else:
            from mcp.client.streamable_http import streamable_http_client
            from mcp.shared._httpx_utils import create_mcp_http_client

            async with (
                create_mcp_http_client(headers=self.config.headers) as client,
                streamable_http_client(self.config.url, http_client=client) as (read, write),
            ):
                yield read, write, None

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._list_changed.set()

    async def _refresh_on_list_changed(self, session: ClientSession) -> None:
        while True:
            await self._list_changed.wait()
            self._list_changed = trio.Event()
            with trio.move_on_after(self.limits.init_timeout):
                try:
                    await self._list_tools(session)
                except Exception as exc:
                    logs.event("mcp_tools_refresh_failed", server=self.name, error=str(exc))

    async def _list_tools(self, session: ClientSession) -> None:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(100):  # pages; a server that pages forever gets the first 100
            params = None if cursor is None else mcp_types.PaginatedRequestParams(cursor=cursor)
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        self.tools = tools
        self._on_tools_changed()


async def _set_on(event: trio.Event, wait: Callable[[], Any]) -> None:
    await wait()
    event.set()


def _classify(exc: BaseException, *, spawned: bool) -> tuple[str, str]:
    """Why a start failed, from the first error in (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if isinstance(exc, trio.TooSlowError):
        return "init_timeout", "no answer to initialize or tools/list in time"
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, OSError) and not spawned:
        return "spawn_failed", text
    return "failed", text
