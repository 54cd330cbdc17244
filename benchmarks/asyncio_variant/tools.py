"""MCP tools of the asyncio variant: one ``mcp`` SDK client session per stdio server.

The config file is ours (:func:`jarvis_trio.tools.config.load_mcp_config`:
``{"mcpServers": {NAME: {"command": ..., "args": [...], "env": {...}}}}``); the
client is the SDK's own on asyncio, as an asyncio server would write it:
:func:`mcp.client.stdio.stdio_client` and :class:`mcp.ClientSession`, entered
once at app startup (FastAPI's lifespan) and left at shutdown. Streamable-HTTP
servers are not supported here.

What the SDK does on a cancel is all there is: a ``call_tool`` whose task is
cancelled sends ``notifications/cancelled`` (the SDK's ``cancel_on_abandon``)
and raises. No budget, no restart, no ledger of abandoned calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from jarvis_trio import logs
from jarvis_trio.tools.config import StdioServer, load_mcp_config


@dataclass
class ToolHost:
    """The tools of every configured server, by name, and the session that runs each."""

    sessions: dict[str, ClientSession] = field(default_factory=dict)  # tool -> session
    specs: list[dict[str, Any]] = field(default_factory=list)  # OpenAI ``tools`` entries

    def openai_tools(self) -> list[dict[str, Any]]:
        return list(self.specs)

    async def call_tool(self, name: str, arguments: Mapping[str, Any]) -> str:
        """The tool's text; an error result comes back as text too."""
        session = self.sessions.get(name)
        if session is None:
            return f"Error: no tool {name!r}."
        result = await session.call_tool(name, dict(arguments))
        text = " ".join(getattr(part, "text", "") for part in result.content)
        return f"Error: {text}" if result.is_error else text


@contextlib.asynccontextmanager
async def open_tool_host(config_path: str | Path) -> AsyncIterator[ToolHost]:
    """Start every enabled stdio server of the config, initialize, list the tools."""
    host = ToolHost()
    async with contextlib.AsyncExitStack() as stack:
        for name, server in load_mcp_config(config_path).enabled().items():
            if not isinstance(server, StdioServer):
                logs.event("mcp_server_skipped", server=name, reason="not stdio")
                continue
            params = StdioServerParameters(
                command=server.command, args=server.args, env=server.env, cwd=server.cwd
            )
            read, write = await stack.enter_async_context(stdio_client(params))
            session = await stack.enter_async_context(ClientSession(read, write))
            await session.initialize()
            listed = await session.list_tools()
            for tool in listed.tools:
                host.sessions[tool.name] = session
                host.specs.append(
                    {
                        "type": "function",
                        "function": {
                            "name": tool.name,
                            "description": tool.description or "",
                            "parameters": tool.input_schema,
                        },
                    }
                )
            logs.event("mcp_server_started", server=name, tools=len(listed.tools))
        yield host
