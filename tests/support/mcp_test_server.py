"""A stdio MCP server for the tool host's tests: ``python -m tests.support.mcp_test_server``.

It logs what happens to it, one JSON object a line, to the file named by
``MCP_TEST_LOG`` (nothing when unset): ``start`` (pid), ``call`` (tool, id),
``cancelled`` (tool, id: a ``notifications/cancelled`` interrupted the tool),
``cancel_ignored`` (the stubborn tool saw its cancel and carried on), ``done``.

Tools:

- ``echo(text)``: the text back.
- ``slow(seconds)``: sleeps, honours its cancel.
- ``stubborn(seconds)``: sleeps and ignores its cancel.
- ``block(seconds)``: blocks the server's event loop: it reads nothing meanwhile, so a
  large request behind it fills the stdin pipe and a cancel cannot be delivered.
- ``spawn()``: starts a child process (``sleep 300``) and answers its pid.
- ``crash()``: the process exits mid-call.
- ``fail()``: an ``isError`` result.
- ``big(chars)``: a long text.
- ``change_tools()``: adds the tool ``added`` and sends ``notifications/tools/list_changed``.

``MCP_TEST_HTTP_PORT`` serves streamable HTTP on 127.0.0.1 and that port (path ``/mcp``;
0: any, as uvicorn's "running on" line says) instead of stdio. ``MCP_TEST_PREFIX``
prefixes every tool name (so two servers share names or not).
``MCP_TEST_IGNORE_SIGTERM=1``: the process ignores SIGTERM, and stays on after its stdin
closes, so only SIGKILL ends it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

LOG = os.environ.get("MCP_TEST_LOG")
PREFIX = os.environ.get("MCP_TEST_PREFIX", "")

server = MCPServer("jarvis-test")


def note(event: str, **fields: Any) -> None:
    if LOG:
        line = json.dumps({"event": event, "t": time.time(), "pid": os.getpid(), **fields})
        with open(LOG, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def call_id(ctx: Context) -> str:
    return str(ctx.request_id)


@server.tool(name=PREFIX + "echo", description="Return the text.")
async def echo(text: str, ctx: Context) -> str:
    note("call", tool="echo", id=call_id(ctx))
    return text


@server.tool(name=PREFIX + "slow", description="Sleep, then answer; can be cancelled.")
async def slow(seconds: float, ctx: Context) -> str:
    note("call", tool="slow", id=call_id(ctx))
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        note("cancelled", tool="slow", id=call_id(ctx))
        raise
    note("done", tool="slow", id=call_id(ctx))
    return f"slept {seconds}"


@server.tool(name=PREFIX + "stubborn", description="Sleep and ignore cancellation.")
async def stubborn(seconds: float, ctx: Context) -> str:
    note("call", tool="stubborn", id=call_id(ctx))
    deadline = anyio.current_time() + seconds
    while (left := deadline - anyio.current_time()) > 0:
        try:
            await anyio.sleep(left)
        except anyio.get_cancelled_exc_class():
            note("cancel_ignored", tool="stubborn", id=call_id(ctx))
            with anyio.CancelScope(shield=True):
                await anyio.sleep(max(0.0, deadline - anyio.current_time()))
    note("done", tool="stubborn", id=call_id(ctx))
    return "stubborn answer"


@server.tool(name=PREFIX + "block", description="Block the whole server (it reads nothing).")
async def block(seconds: float, ctx: Context) -> str:
    note("call", tool="block", id=call_id(ctx))
    time.sleep(seconds)  # noqa: ASYNC251  (on purpose: the server's loop stops)
    note("done", tool="block", id=call_id(ctx))
    return "unblocked"


@server.tool(name=PREFIX + "spawn", description="Start a child process; its pid.")
async def spawn(ctx: Context) -> str:
    note("call", tool="spawn", id=call_id(ctx))
    child = subprocess.Popen(["sleep", "300"])  # noqa: ASYNC220
    return str(child.pid)


@server.tool(name=PREFIX + "crash", description="Exit the process mid-call.")
async def crash(ctx: Context) -> str:
    note("call", tool="crash", id=call_id(ctx))
    await anyio.sleep(0.05)
    os._exit(3)


@server.tool(name=PREFIX + "fail", description="Fail with an error result.")
async def fail(ctx: Context) -> str:
    note("call", tool="fail", id=call_id(ctx))
    raise ToolError("this tool always fails")


@server.tool(name=PREFIX + "big", description="A long answer.")
async def big(chars: int, ctx: Context) -> str:
    note("call", tool="big", id=call_id(ctx))
    return "x" * chars


@server.tool(name=PREFIX + "change_tools", description="Add a tool and say so.")
async def change_tools(ctx: Context) -> str:
    note("call", tool="change_tools", id=call_id(ctx))

    async def added() -> str:
        return "added"

    server.add_tool(added, name=PREFIX + "added", description="Added at run time.")
    await ctx.request_context.session.send_tool_list_changed()
    return "changed"


def main() -> None:
    if os.environ.get("MCP_TEST_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    note("start", argv=sys.argv[1:])
    if port := os.environ.get("MCP_TEST_HTTP_PORT"):
        server.run("streamable-http", host="127.0.0.1", port=int(port))
    else:
        server.run("stdio")
    note("exit")
    if os.environ.get("MCP_TEST_IGNORE_SIGTERM") == "1":
        time.sleep(3600)  # a closed stdin does not end it either: only SIGKILL does


if __name__ == "__main__":
    main()
