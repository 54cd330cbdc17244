"""The MCP servers file, in the shape other MCP clients already use.

.. code-block:: json

    {"mcpServers": {
        "demo": {"command": "python", "args": ["-m", "jarvis_trio.demo_tools"], "env": {}},
        "remote": {"url": "http://127.0.0.1:9000/mcp"}
    }}

A server with ``command`` is started as a subprocess and spoken to over stdio; one with
``url`` is a streamable-HTTP server. Only this file, the operator's, names MCP servers:
a request never can.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

# Server names prefix clashing tool names (`<server>__<tool>`), and tool names offered to
# models must match ^[a-zA-Z0-9_-]{1,64}$: the same alphabet here.
SERVER_NAME = r"^[A-Za-z0-9_-]{1,32}$"


class McpConfigError(ValueError):
    """The MCP config file is missing, not JSON, or not valid; the message names the field."""


class StdioServer(BaseModel):
    """A server run as a subprocess, spoken to over its stdin and stdout."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["stdio"] | None = None
    command: str = Field(min_length=1)
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    cwd: str | None = None
    disabled: bool = False


class HttpServer(BaseModel):
    """A streamable-HTTP server, already running somewhere."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["http", "streamable-http", "streamableHttp"] | None = None
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    disabled: bool = False

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


def _kind(value: Any) -> str | None:
    if isinstance(value, dict):
        if "command" in value:
            return "stdio"
        if "url" in value:
            return "http"
    return None


ServerConfig = Annotated[
    Annotated[StdioServer, Tag("stdio")] | Annotated[HttpServer, Tag("http")],
    Discriminator(
        _kind,
        custom_error_type="server_kind",
        custom_error_message="a server needs `command` (stdio) or `url` (streamable HTTP)",
    ),
]


class McpConfig(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    servers: dict[
        Annotated[str, Field(pattern=SERVER_NAME)],
        ServerConfig,
    ] = Field(default_factory=dict, alias="mcpServers")

    def enabled(self) -> dict[str, StdioServer | HttpServer]:
        return {name: server for name, server in self.servers.items() if not server.disabled}


def _where(loc: tuple[int | str, ...]) -> str:
    parts = ["mcpServers" if part == "servers" else str(part) for part in loc]
    # A bad key shows up as `mcpServers.NAME.[key]` in pydantic's location.
    return ".".join(part for part in parts if part not in ("stdio", "http", "[key]"))


def parse_mcp_config(data: Any, *, source: str = "MCP config") -> McpConfig:
    """Validate an already-parsed config; :class:`McpConfigError` names each bad field."""
    if not isinstance(data, dict):
        raise McpConfigError(f"{source}: the top level must be a JSON object")
    if "mcpServers" not in data:
        raise McpConfigError(f'{source}: no "mcpServers" object')
    try:
        return McpConfig.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid MCP server config:"]
        for error in exc.errors():
            where = _where(error["loc"])
            lines.append(f"  {where}: {error['msg']}")
        raise McpConfigError("\n".join(lines)) from None


def load_mcp_config(path: str | Path) -> McpConfig:
    """Read and validate the JSON file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise McpConfigError(f"{path}: cannot read the MCP config: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(
            f"{path}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    return parse_mcp_config(data, source=str(path))
