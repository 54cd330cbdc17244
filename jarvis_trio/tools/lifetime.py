"""The tool host in the app's lifetime: started with the app, ended at its shutdown.

Nothing is offered to requests yet; the agent loop will find the host in
``app.extensions["jarvis_tools"]``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from quart_trio import QuartTrio

from jarvis_trio.config import Settings
from jarvis_trio.tools.config import McpConfig, StdioServer, load_mcp_config

if TYPE_CHECKING:  # the SDK is imported only when servers are configured (~0.5 s)
    from jarvis_trio.tools.host import ToolHost, ToolObserver

EXTENSION = "jarvis_tools"


def tool_host_from(settings: Settings, observer: ToolObserver | None = None) -> ToolHost | None:
    """The host of ``JARVIS_MCP_CONFIG``'s servers (and the demo server with
    ``JARVIS_DEMO_TOOLS``); raises ``McpConfigError`` on a bad file."""
    if settings.mcp_config is None and not settings.demo_tools:
        return None
    config = load_mcp_config(settings.mcp_config) if settings.mcp_config else McpConfig()
    if settings.demo_tools:
        demo = StdioServer(command=sys.executable, args=["-m", "jarvis_trio.demo_tools"])
        config = config.model_copy(update={"servers": {"demo": demo, **config.servers}})
    from jarvis_trio.tools.host import ToolHost

    return ToolHost(
        config,
        tool_timeout=settings.tool_timeout,
        cancel_timeout=settings.agent_cancel_timeout,
        result_max_chars=settings.tool_result_max_chars,
        observer=observer,
    )


def install_tool_host(app: QuartTrio, host: ToolHost) -> None:
    """Start the MCP servers when the app starts serving, end them when it stops.

    Install it after the session manager: its ``after_serving`` then runs after the
    streams' shutdown, so the agent runs have ended when the servers are stopped.
    """
    app.extensions[EXTENSION] = host

    @app.before_serving
    async def start_tools() -> None:
        await app.nursery.start(host.run)

    @app.after_serving
    async def stop_tools() -> None:
        await host.aclose()
