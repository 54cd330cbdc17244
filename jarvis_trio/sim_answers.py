"""What the simulated models answer when tools or JSON are asked for. Pure: no I/O.

Shared by the embedded model (``--backend sim``) and the Ollama simulator
(``jarvis-trio sim-ollama``), so a tool-using client can be tested end to end
with no model at all. The rules, in order:

1. The conversation ends with tool results (``tool`` turns after the last
   assistant turn): answer with text that quotes them.
2. Tools are offered and the last user turn names one or more of them (as a
   word): call them, in the order named (only the first when parallel calls
   are off). A tool's arguments are the JSON object written right after its
   name (``use add {"a": 2, "b": 3}``), else an example built from its
   parameters' JSON schema.
3. JSON is asked for: a JSON object, matching the schema when one is given.
4. Otherwise: the model's usual text (``None`` here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# How deep an example follows nested schemas (a recursive schema must still end).
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Turn:
    role: str
    content: str
    # For a tool result: the tool's name, when known.
    tool_name: str | None = None


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Plan:
    """The answer to give: tool calls, a fixed text, or (neither) the usual words."""

    calls: tuple[Call, ...] = ()
    text: str | None = None


def plan(
    turns: Sequence[Turn],
    *,
    tools: Sequence[Mapping[str, Any]] = (),
    json_schema: Mapping[str, Any] | None = None,
    json_mode: bool = False,
    parallel: bool = True,
) -> Plan:
    results = _trailing_tool_results(turns)
    if results:
        said = "; ".join(
            f"{name} returned {content}" if name else f"the tool returned {content}"
            for name, content in results
        )
        return Plan(text=f"Done: {said}.")
    prompt = next((t.content for t in reversed(turns) if t.role == "user"), "")
    calls = _calls_named(prompt, tools)
    if calls:
        return Plan(calls=calls if parallel else calls[:1])
    if json_schema is not None:
        return Plan(text=json.dumps(example_for(json_schema), ensure_ascii=False))
    if json_mode:
        words = prompt.split()[:8]
        return Plan(text=json.dumps({"answer": " ".join(words)}, ensure_ascii=False))
    return Plan()


def _trailing_tool_results(turns: Sequence[Turn]) -> list[tuple[str | None, str]]:
    results: list[tuple[str | None, str]] = []
    for turn in reversed(turns):
        if turn.role != "tool":
            break
        results.append((turn.tool_name, turn.content))
    return results[::-1]


def _calls_named(prompt: str, tools: Sequence[Mapping[str, Any]]) -> tuple[Call, ...]:
    found: list[tuple[int, Call]] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        name = function["name"]
        match = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w.-])", prompt)
        if match is None:
            continue
        arguments = _json_after(prompt, match.end())
        if arguments is None:
            parameters = function.get("parameters")
            example = example_for(parameters) if isinstance(parameters, Mapping) else {}
            arguments = example if isinstance(example, dict) else {}
        found.append((match.start(), Call(name, arguments)))
    return tuple(call for _, call in sorted(found, key=lambda item: item[0]))


def _json_after(text: str, at: int) -> dict[str, Any] | None:
    rest = text[at:].lstrip()
    if not rest.startswith("{"):
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(rest)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def example_for(schema: Mapping[str, Any], depth: int = 0) -> Any:
    """A value that matches ``schema`` (the common JSON Schema keywords)."""
    if depth > _MAX_DEPTH:
        return None
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "default" in schema:
        return schema["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options and isinstance(options[0], Mapping):
            return example_for(options[0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties")
        if not isinstance(properties, Mapping):
            return {}
        return {
            name: example_for(sub, depth + 1)
            for name, sub in properties.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", 1) or 1))
        item = example_for(items, depth + 1) if isinstance(items, Mapping) else "example"
        return [item] * min(count, 3)
    if kind == "integer":
        return int(schema.get("minimum", 1) or 1)
    if kind == "number":
        return float(schema.get("minimum", 1.5) or 1.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"
