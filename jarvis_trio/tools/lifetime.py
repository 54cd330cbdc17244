"""The tool host in the app's lifetime: started with the app, ended at its shutdown.

Nothing is offered to requests yet; the agent loop will find the host in
``app.extensions["jarvis_tools"]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart_trio import QuartTrio

from jarvis_trio.config import Settings
from jarvis_trio.tools.config import load_mcp_config

if TYPE_CHECKING:  # the SDK is imported only when servers are configured (~0.5 s)
    from jarvis_trio.tools.host import ToolHost, ToolObserver

EXTENSION = "jarvis_tools"


def tool_host_from(settings: Settings, observer: ToolObserver | None = None) -> ToolHost | None:
    """The host of ``JARVIS_MCP_CONFIG``'s servers; raises ``McpConfigError`` on a bad file."""
    if settings.mcp_config is None:
        return None
    config = load_mcp_config(settings.mcp_config)
    from jarvis_trio.tools.host import ToolHost

    return ToolHost(
        config,
        tool_timeout=settings.tool_timeout,
        cancel_timeout=settings.agent_cancel_timeout,
        result_max_chars=settings.tool_result_max_chars,
        observer=observer,
    )


def install_tool_host(
    app: QuartTrio, settings: Settings, observer: ToolObserver | None = None
) -> ToolHost | None:
    """Start the configured MCP servers when the app starts serving, end them when it stops.

    Its ``after_serving`` runs after the ones registered before it (the streams' shutdown),
    so the agent runs have ended when the servers are stopped.
    """
    host = tool_host_from(settings, observer)
    if host is None:
        return None
    app.extensions[EXTENSION] = host

    @app.before_serving
    async def start_tools() -> None:
        await app.nursery.start(host.run)

    @app.after_serving
    async def stop_tools() -> None:
        await host.aclose()

    return host
