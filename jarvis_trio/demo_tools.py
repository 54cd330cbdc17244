"""A small MCP server to try agent mode with: ``python -m jarvis_trio.demo_tools`` (stdio).

Tools: ``now`` (the current time), ``add`` and ``multiply`` (numbers), and ``sleep``
(waits, and stops at once when the call is cancelled: the tool to press Stop on).

It is built on the ``mcp`` SDK's server (``MCPServer``) and runs on asyncio in its own
process; the gateway speaks to it over stdin and stdout. An ``mcp.json`` for it::

    {"mcpServers": {"demo": {"command": "python", "args": ["-m", "jarvis_trio.demo_tools"]}}}
"""

from __future__ import annotations

import datetime as dt

import anyio
from mcp.server.mcpserver import MCPServer

MAX_SLEEP = 300.0

server = MCPServer(
    "jarvis-demo-tools",
    instructions="Demo tools of jarvis-trio: a clock, arithmetic, and a sleep.",
)


@server.tool(description="The current date and time (UTC, ISO 8601).")
async def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@server.tool(description="The sum of two numbers.")
async def add(a: float, b: float) -> float:
    return a + b


@server.tool(description="The product of two numbers.")
async def multiply(a: float, b: float) -> float:
    return a * b


@server.tool(description=f"Wait this many seconds (at most {MAX_SLEEP:g}), then say so.")
async def sleep(seconds: float) -> str:
    seconds = min(max(seconds, 0.0), MAX_SLEEP)
    await anyio.sleep(seconds)  # a cancelled call ends here, at once
    return f"slept {seconds:g} s"


def main() -> None:
    server.run("stdio")


if __name__ == "__main__":
    main()
