"""The tool host: every configured MCP server, their tools under one namespace, tool calls.

A sketch of its use (the agent loop runs the calls in its own nursery)::

    host = ToolHost(load_mcp_config("mcp.json"))
    async with trio.open_nursery() as nursery:
        await nursery.start(host.run)          # every server started (or failed) once
        specs = host.tools()                   # ToolSpec(name, server, ...); .openai()
        result = await host.call_tool("add", {"a": 2, "b": 3})
        await host.aclose()                    # every MCP process ended

:meth:`ToolHost.call_tool` never raises for a tool's failure: errors come back as a
:class:`ToolResult` with an ``outcome`` other than ``ok``. It does raise
:class:`trio.Cancelled` when its caller is cancelled, within ``cancel_timeout``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

import mcp_types
import trio
from mcp.shared.exceptions import MCPError

from jarvis_trio import logs
from jarvis_trio.tools.config import McpConfig
from jarvis_trio.tools.outcomes import Outcome
from jarvis_trio.tools.results import ToolResult, ToolSpec, render, truncate
from jarvis_trio.tools.server import McpServer, PendingCall, ServerLimits


class ToolObserver(Protocol):
    """Told of every tool call's end (the app's metrics)."""

    def tool_call_ended(self, outcome: str, seconds: float) -> None: ...


SEPARATOR = "__"
"""Between a server's name and a tool's where two servers have a tool of the same name."""


_INVALID = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64  # OpenAI's limit for a function name


def offered_names(tools: list[tuple[str, str]]) -> list[str]:
    """The names (server, MCP name) pairs are offered under, in order. Pure.

    A tool keeps its MCP name unless another server has one of the same name: then
    both are ``<server>__<name>``. Characters OpenAI's function names cannot have
    (``^[a-zA-Z0-9_-]{1,64}$``) become ``_``, names are cut at 64 characters, and a
    name taken twice after that gets ``_2``, ``_3``... A model calls the offered name;
    the host calls the MCP name.
    """
    count = Counter(name for _, name in tools)
    out: list[str] = []
    taken: set[str] = set()
    for server, name in tools:
        wanted = f"{server}{SEPARATOR}{name}" if count[name] > 1 else name
        offered = _INVALID.sub("_", wanted)[:MAX_NAME] or "tool"
        n = 1
        while offered in taken:
            n += 1
            suffix = f"_{n}"
            offered = _INVALID.sub("_", wanted)[: MAX_NAME - len(suffix)] + suffix
        taken.add(offered)
        out.append(offered)
    return out


class ToolHost:
    def __init__(
        self,
        config: McpConfig,
        *,
        tool_timeout: float = 60.0,
        cancel_timeout: float = 0.5,
        result_max_chars: int = 16_000,
        limits: ServerLimits | None = None,
        observer: ToolObserver | None = None,
    ) -> None:
        self.tool_timeout = tool_timeout
        self.observer = observer
        self.cancel_timeout = cancel_timeout
        self.result_max_chars = result_max_chars
        limits = limits or ServerLimits()
        self.servers = {
            name: McpServer(name, server, limits, self._tools_changed)
            for name, server in config.enabled().items()
        }
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._running = False
        self._stopped = trio.Event()

    # -- lifetime -------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every server until :meth:`aclose` or cancellation.

        ``started`` once each server has started, or failed to (at most the
        ``init_timeout`` of one start). A server that dies is restarted with backoff.
        """
        self._running = True
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    async with trio.open_nursery() as starting:
                        for server in self.servers.values():
                            starting.start_soon(nursery.start, server.run)
                    task_status.started()
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        """End every server and wait until their processes are gone (bounded)."""
        self._scope.cancel()
        if self._running:
            await self._stopped.wait()

    # -- tools ----------------------------------------------------------------------

    def tools(self) -> list[ToolSpec]:
        """Every server's tools as last listed (kept while a server restarts).

        A tool keeps its MCP name unless another server has one of the same name:
        then both are offered as ``<server>__<name>``.
        """
        entries = [(server, tool) for server in self.servers.values() for tool in server.tools]
        names = offered_names([(server.name, tool.name) for server, tool in entries])
        return [
            ToolSpec(
                name=name,
                server=server.name,
                mcp_name=tool.name,
                description=tool.description or "",
                input_schema=dict(tool.input_schema),
            )
            for name, (server, tool) in zip(names, entries, strict=True)
        ]

    def openai_tools(self) -> list[dict[str, Any]]:
        """:meth:`tools` as the OpenAI ``tools`` parameter."""
        return [spec.openai() for spec in self.tools()]

    def _tools_changed(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_tools_changed(self) -> None:
        """Return at the next change of any server's tool list."""
        await self._changed.wait()

    # -- calls ----------------------------------------------------------------------

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any] | None = None, *, trace: str | None = None
    ) -> ToolResult:
        """Call the tool offered as ``name``, within ``tool_timeout``; errors are values.

        If the caller is cancelled, the call gets ``notifications/cancelled`` and the
        caller is released within ``cancel_timeout``: a call whose cancel cannot be
        delivered by then is abandoned (``agent_tool_abandoned``) and a late answer is
        dropped. Enough abandoned calls restart the server.
        """
        started = trio.current_time()
        spec = next((tool for tool in self.tools() if tool.name == name), None)
        logs.event("tool_call_start", trace=trace, tool=name, server=spec and spec.server)
        if spec is None:
            return self._end(trace, name, "unknown_tool", f"there is no tool {name!r}", started)
        server = self.servers[spec.server]
        call = server.start_call(spec.mcp_name, dict(arguments or {}))
        if call is None:
            text = f"the MCP server {server.name!r} of tool {name!r} is not running"
            return self._end(trace, name, "unavailable", text, started, server=server.name)
        try:
            with trio.move_on_after(self.tool_timeout) as timer:
                await call.done.wait()
        except BaseException:  # cancelled, mostly: the call must not outlive its caller
            delivered = await self._cancel(trace, name, server, call)
            self._ended(
                trace, name, server.name, "cancelled" if delivered else "abandoned", started
            )
            raise
        if timer.cancelled_caught:
            await self._cancel(trace, name, server, call)
            text = f"the tool {name!r} did not answer within {self.tool_timeout:g} s"
            return self._end(trace, name, "timeout", text, started, server=server.name)
        return self._from_call(trace, name, server, call, started)

    async def _cancel(
        self, trace: str | None, name: str, server: McpServer, call: PendingCall
    ) -> bool:
        """Cancel a call (the SDK sends ``notifications/cancelled``) and wait for that to
        go out, at most ``cancel_timeout``. False if the call had to be abandoned."""
        call.scope.cancel()
        with trio.CancelScope(shield=True), trio.move_on_after(self.cancel_timeout):
            await call.done.wait()
        if call.done.is_set():
            return True
        logs.event(
            "agent_tool_abandoned",
            level=logging.WARNING,
            trace=trace,
            tool=name,
            server=server.name,
            budget_ms=round(self.cancel_timeout * 1000),
        )
        server.note_abandoned()
        return False

    def _from_call(
        self, trace: str | None, name: str, server: McpServer, call: PendingCall, started: float
    ) -> ToolResult:
        result, error = call.result, call.error
        if result is not None:
            outcome: Outcome = "tool_error" if result.is_error else "ok"
            structured = None if result.is_error else result.structured_content
            return self._end(trace, name, outcome, render(result), started, server.name, structured)
        closed = isinstance(error, MCPError) and error.code == mcp_types.CONNECTION_CLOSED
        if isinstance(error, MCPError) and not closed:
            text = f"the MCP server {server.name!r} answered with error {error.code}: {error}"
            return self._end(trace, name, "mcp_error", text, started, server.name)
        if closed or call.ended_by == "exited":
            text = f"the MCP server {server.name!r} exited during the call to {name!r}"
            return self._end(trace, name, "server_crashed", text, started, server.name)
        if error is None:  # we ended its session: a restart, or shutdown
            why = call.ended_by or "shutdown"
            text = f"the MCP server {server.name!r} was stopped ({why}) during the call"
            return self._end(trace, name, "unavailable", text, started, server.name)
        text = f"the call to {name!r} failed: {type(error).__name__}: {error}"
        return self._end(trace, name, "mcp_error", text, started, server.name)

    def _end(
        self,
        trace: str | None,
        name: str,
        outcome: Outcome,
        text: str,
        started: float,
        server: str | None = None,
        structured: dict[str, Any] | None = None,
    ) -> ToolResult:
        text, truncated = truncate(text, self.result_max_chars)
        duration = self._ended(trace, name, server, outcome, started, truncated)
        return ToolResult(name, outcome, text, duration, truncated, structured)

    def _ended(
        self,
        trace: str | None,
        name: str,
        server: str | None,
        outcome: str,
        started: float,
        truncated: bool = False,
    ) -> float:
        """Log and count a call's end; its duration in ms."""
        seconds = trio.current_time() - started
        duration = round(seconds * 1000, 1)
        logs.event(
            "tool_call_end",
            trace=trace,
            tool=name,
            server=server,
            duration_ms=duration,
            outcome=outcome,
            truncated=truncated or None,
        )
        if self.observer is not None:
            self.observer.tool_call_ended(outcome, seconds)
        return duration
