"""``/api/chat`` and ``/api/generate`` bodies, validated as Ollama does. Pure: no I/O."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from jarvis_trio import sim_answers
from jarvis_trio.ollama_sim.faults import Faults, parse_model
from jarvis_trio.ollama_sim.models import FakeModel
from jarvis_trio.ollama_sim.wire import HttpError


@dataclass(frozen=True)
class Generation:
    """A parsed ``/api/chat`` or ``/api/generate`` request."""

    kind: Literal["chat", "generate"]
    model: str  # as requested, echoed back
    base: FakeModel
    faults: Faults
    raw_faults: dict[str, str | None]
    prompt: str  # what the answer derives from; "" is a model load
    stream: bool
    num_predict: int | None
    stop: tuple[str, ...]
    seed: int | None
    body: dict[str, Any] = field(default_factory=dict)
    turns: tuple[sim_answers.Turn, ...] = ()
    tools: tuple[dict[str, Any], ...] = ()
    format: str | dict[str, Any] | None = None
    think: bool | str = False
    logprobs: bool = False
    top_logprobs: int = 0

    def plan(self) -> sim_answers.Plan:
        """What to answer when tools or JSON are asked for (:mod:`jarvis_trio.sim_answers`)."""
        return sim_answers.plan(
            self.turns,
            tools=self.tools,
            json_schema=self.format if isinstance(self.format, dict) else None,
            json_mode=self.format == "json",
        )


def parse_generation(kind: Literal["chat", "generate"], body: bytes) -> Generation:
    """Validate like Ollama does; raises :class:`HttpError`."""
    if not body.strip():
        raise HttpError(400, "missing request body")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError(400, f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise HttpError(400, "request body must be a JSON object")
    model = data.get("model")
    if model is None or model == "":
        raise HttpError(400, "model is required")
    if not isinstance(model, str):
        raise HttpError(400, "model must be a string")
    try:
        return _parse_fields(kind, model, data)
    except HttpError as exc:
        exc.model = model
        raise


def _parse_fields(
    kind: Literal["chat", "generate"], model: str, data: dict[str, Any]
) -> Generation:
    stream = data.get("stream", True)
    if stream is None:
        stream = True
    if not isinstance(stream, bool):
        raise HttpError(400, "stream must be a boolean")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise HttpError(400, "options must be an object")
    turns: tuple[sim_answers.Turn, ...] = ()
    if kind == "chat":
        prompt = _chat_prompt(data.get("messages"))
        turns = _turns(data.get("messages"))
    else:
        prompt = data.get("prompt") or ""
        if not isinstance(prompt, str):
            raise HttpError(400, "prompt must be a string")
    num_predict = _optional_int(options, "num_predict")
    seed = _optional_int(options, "seed")
    stop = options.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) for s in stop):
        raise HttpError(400, "options.stop must be a string or a list of strings")
    base, faults, raw = parse_model(model)
    tools = data.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise HttpError(400, "tools must be a list of objects")
    fmt = data.get("format") or None
    if fmt is not None and not (fmt == "json" or isinstance(fmt, dict)):
        raise HttpError(400, 'format must be "json" or a JSON schema')
    think = data.get("think") or False
    if not isinstance(think, bool | str):
        raise HttpError(400, "think must be a boolean or a level")
    top_logprobs = data.get("top_logprobs") or 0
    if not isinstance(top_logprobs, int) or not 0 <= top_logprobs <= 20:
        raise HttpError(400, "top_logprobs must be an integer from 0 to 20")
    return Generation(
        kind=kind,
        model=model,
        base=base,
        faults=faults,
        raw_faults=raw,
        prompt=prompt,
        stream=stream,
        num_predict=num_predict if num_predict is not None and num_predict >= 0 else None,
        stop=tuple(s for s in stop if s),
        seed=seed,
        body=data,
        turns=turns,
        tools=tuple(tools),
        format=fmt,
        think=think,
        logprobs=bool(data.get("logprobs")),
        top_logprobs=top_logprobs,
    )


def _chat_prompt(messages: Any) -> str:
    if messages is None:
        return ""
    if not isinstance(messages, list):
        raise HttpError(400, "messages must be a list")
    lines = []
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise HttpError(400, "each message needs a string role")
        content = message.get("content") or ""
        if not isinstance(content, str):
            raise HttpError(400, "message content must be a string")
        images = message.get("images") or []
        if not isinstance(images, list) or not all(_is_base64(i) for i in images):
            raise HttpError(400, "images must be a list of base64 strings")
        calls = message.get("tool_calls") or []
        if not isinstance(calls, list) or not all(_is_tool_call(c) for c in calls):
            raise HttpError(400, "tool_calls must be a list of {function: {name, arguments}}")
        lines.append(f"{message['role']}: {content}")
    return "\n".join(lines)


def _turns(messages: list[dict[str, Any]] | None) -> tuple[sim_answers.Turn, ...]:
    return tuple(
        sim_answers.Turn(m["role"], m.get("content") or "", m.get("tool_name"))
        for m in messages or ()
    )


def _is_base64(value: object) -> bool:
    if not isinstance(value, str):
        return False
    try:
        base64.b64decode(value, validate=True)
    except ValueError:
        return False
    return True


def _is_tool_call(value: object) -> bool:
    function = value.get("function") if isinstance(value, dict) else None
    return (
        isinstance(function, dict)
        and isinstance(function.get("name"), str)
        and isinstance(function.get("arguments", {}), dict)
    )


def _optional_int(options: dict[str, Any], name: str) -> int | None:
    value = options.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise HttpError(400, f"options.{name} must be an integer")
    return value
