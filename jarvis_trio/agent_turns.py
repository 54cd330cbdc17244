"""The agent's bookkeeping between model calls. Pure: no trio, no I/O.

An agent answer is a conversation the gateway continues on the client's
behalf: the model's turn with its tool calls, then one ``tool`` turn per
call, then the model again. These functions decide which calls the gateway
runs, and build the next model request from the last one.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from jarvis_trio.generation import ChatTurn, GenerationRequest, ToolCall

# Characters of a tool's result shown in a progress event (the model reads more).
PROGRESS_RESULT_CHARS = 500


@dataclass(frozen=True, slots=True)
class Calls:
    """A model turn's tool calls, split by who runs them."""

    server: tuple[ToolCall, ...]
    client: tuple[ToolCall, ...]


def offered_tools(
    client_tools: Sequence[Mapping[str, Any]], server_tools: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The client's tools, then the servers' tools whose names the client did not take."""
    taken = {_name(t) for t in client_tools}
    return [dict(t) for t in client_tools] + [
        dict(t) for t in server_tools if _name(t) not in taken
    ]


def split_calls(message: Mapping[str, Any], client_names: Iterable[str]) -> Calls:
    """The calls of an assembled assistant ``message`` (see :func:`jarvis_trio.wire.assemble`).

    A call of a tool the client offered is the client's, even where a server has a
    tool of that name: the client's tools shadow the servers'. Every other call is
    the gateway's to run; a name no server has comes back to the model as an
    ``unknown_tool`` error, never to a client that did not offer it.
    """
    names = set(client_names)
    server: list[ToolCall] = []
    client: list[ToolCall] = []
    for raw in message.get("tool_calls") or ():
        function = raw.get("function") or {}
        call = ToolCall(
            str(raw.get("id") or "call_" + secrets.token_hex(12)),
            str(function.get("name") or ""),
            str(function.get("arguments") or ""),
        )
        (client if call.name in names else server).append(call)
    return Calls(tuple(server), tuple(client))


def arguments_of(call: ToolCall) -> dict[str, Any] | str:
    """The call's arguments as an object, or the reason they are not one."""
    try:
        value = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError as exc:
        return f"the arguments are not JSON: {exc}"
    if not isinstance(value, dict):
        return "the arguments are not a JSON object"
    return value


def step_request(
    request: GenerationRequest,
    *,
    tools: Sequence[Mapping[str, Any]],
    turns: Sequence[ChatTurn] = (),
) -> GenerationRequest:
    """``request`` with ``turns`` appended, offering ``tools``. A request that came with
    its client's messages as sent (``raw_messages``) gets the turns' OpenAI form too.

    The client's ``tool_choice`` applies to the first model call only: forced on every
    round, a model could never answer in text.
    """
    options = dict(request.options)
    if turns:
        options.pop("tool_choice", None)
    if tools:
        options["tools"] = [dict(t) for t in tools]
    else:
        options.pop("tools", None)
        options.pop("tool_choice", None)
        options.pop("parallel_tool_calls", None)
    return replace(
        request,
        messages=(*request.messages, *turns),
        raw_messages=(
            (*request.raw_messages, *(turn.as_openai() for turn in turns))
            if request.raw_messages
            else ()
        ),
        options=MappingProxyType(options),
    )


def assistant_turn(text: str, calls: Sequence[ToolCall]) -> ChatTurn:
    return ChatTurn("assistant", text, tool_calls=tuple(calls))


def tool_turn(call: ToolCall, text: str) -> ChatTurn:
    return ChatTurn("tool", text, tool_call_id=call.id, name=call.name)


def skipped_event(step: int, calls: Sequence[ToolCall], reason: str) -> dict[str, Any]:
    """Server tool calls the gateway did not run (the answer ends with the client's
    calls, or the round limit was reached)."""
    return {
        "event": "tool_calls_skipped",
        "step": step,
        "reason": reason,
        "calls": [{"id": c.id, "name": c.name} for c in calls],
    }


def started_event(step: int, call: ToolCall) -> dict[str, Any]:
    return {
        "event": "tool_call_started",
        "step": step,
        "id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def finished_event(
    step: int, call: ToolCall, outcome: str, duration_ms: float, text: str
) -> dict[str, Any]:
    shown = text if len(text) <= PROGRESS_RESULT_CHARS else text[:PROGRESS_RESULT_CHARS] + "…"
    return {
        "event": "tool_call_finished",
        "step": step,
        "id": call.id,
        "name": call.name,
        "outcome": outcome,
        "ok": outcome == "ok",
        "duration_ms": round(duration_ms, 1),
        "result": shown,
    }


def _name(tool: Mapping[str, Any]) -> str:
    function = tool.get("function")
    return str(function.get("name")) if isinstance(function, Mapping) else ""
