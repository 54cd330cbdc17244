"""The agent benchmark's MCP server: ``python -m benchmarks.mcp_slow`` (stdio).

One tool, ``slow(seconds)``: it sleeps and honours its cancel. The server logs
what happens to each call, one JSON object a line, to the file named by
``BENCH_MCP_LOG``: ``call`` when the call arrives, ``cancelled`` when a
``notifications/cancelled`` interrupted it, ``done`` when it ran to its end.
Each line has the call's JSON-RPC ``id`` and ``t``, from ``time.monotonic()``:
on Linux one clock for every process, so the benchmark compares it with its own.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer

LOG = os.environ.get("BENCH_MCP_LOG")

server = MCPServer("jarvis-bench")


def note(event: str, **fields: Any) -> None:
    if LOG:
        line = json.dumps({"event": event, "t": time.monotonic(), **fields})
        with open(LOG, "a", encoding="utf-8") as out:
            out.write(line + "\n")


@server.tool(name="slow", description="Sleep, then answer; can be cancelled.")
async def slow(seconds: float, ctx: Context) -> str:
    call = str(ctx.request_id)
    note("call", id=call)
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        note("cancelled", id=call)
        raise
    note("done", id=call)
    return f"slept {seconds}"


if __name__ == "__main__":
    server.run("stdio")
