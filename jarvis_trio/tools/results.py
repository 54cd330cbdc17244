"""What a tool call gives back: always a value, never an exception, for the model to read."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import mcp_types

from jarvis_trio.tools.outcomes import Outcome


@dataclass(frozen=True)
class ToolSpec:
    """A tool as offered to a model: ``name`` is unique across servers."""

    name: str
    server: str
    mcp_name: str
    description: str
    input_schema: dict[str, Any]

    def openai(self) -> dict[str, Any]:
        """The OpenAI ``tools`` entry (``{"type": "function", "function": {...}}``)."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
        }


@dataclass(frozen=True)
class ToolResult:
    """One finished call. ``text`` is what the model reads, at most the configured size."""

    tool: str
    outcome: Outcome
    text: str
    duration_ms: float
    truncated: bool = False
    structured: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


def render(result: mcp_types.CallToolResult) -> str:
    """A tool result's content as text: text parts as they are, others as short markers."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent):
            parts.append(f"[image {block.mime_type}]")
        elif isinstance(block, mcp_types.AudioContent):
            parts.append(f"[audio {block.mime_type}]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.uri}]")
        elif isinstance(block, mcp_types.EmbeddedResource):
            resource = block.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(resource.text)
            else:
                parts.append(f"[resource {resource.uri}]")
        else:
            parts.append(f"[{type(block).__name__}]")
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def truncate(text: str, max_chars: int) -> tuple[str, bool]:
    """At most ``max_chars`` of ``text`` plus a marker saying how much was cut."""
    if len(text) <= max_chars:
        return text, False
    return f"{text[:max_chars]}\n[truncated: {len(text) - max_chars} more characters]", True
