"""How a tool call ends (without importing the MCP SDK: the metrics need only these)."""

from __future__ import annotations

from typing import Literal, get_args

Outcome = Literal[
    "ok",  # the tool answered
    "tool_error",  # the tool answered with isError: its text says why
    "mcp_error",  # the server answered the request with a JSON-RPC error
    "server_crashed",  # the connection ended mid-call (the server exited)
    "unavailable",  # the tool's server is not running, or was stopped during the call
    "unknown_tool",  # no configured server has a tool of that name
    "timeout",  # JARVIS_TOOL_TIMEOUT ran out; the call was cancelled at the server
]

# Every outcome of a call in the logs and metrics: a result's, or, when the caller was
# cancelled (and got no result), whether the cancel reached the server in time.
TOOL_OUTCOMES = (*get_args(Outcome), "cancelled", "abandoned")
