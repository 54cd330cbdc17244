"""The faults a request asks for in its model name: ``base+fault+name=value``. Pure: no I/O.

What each fault does is described in the reference page ``docs/reference/ollama-sim.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from jarvis_trio.ollama_sim.models import FakeModel, find_model
from jarvis_trio.ollama_sim.wire import HttpError

MAX_ANSWER_TOKENS = 100_000


@dataclass(frozen=True)
class Faults:
    stall_headers: float | None = None
    stall_after: int | None = None
    slow: float | None = None
    disconnect_after: int | None = None
    malformed_after: int | None = None
    error_after: int | None = None
    status: int | None = None
    tokens: int | None = None


def parse_model(spec: str) -> tuple[FakeModel, Faults, dict[str, str | None]]:
    """``base+fault+name=value`` → the base model, the faults, and the faults as written.

    Raises :class:`~jarvis_trio.ollama_sim.wire.HttpError`: 400 for a bad fault, 404
    for an unknown base model.
    """
    base, *parts = spec.split("+")
    model = find_model(base)
    if model is None:
        raise HttpError(404, f'model "{spec}" not found, try pulling it first')
    raw: dict[str, str | None] = {}
    values: dict[str, Any] = {}
    for part in parts:
        name, sep, text = part.partition("=")
        value: str | None = text if sep else None
        raw[name] = value
        if name.startswith("http") and name[4:].isdigit() and value is None:
            name, value = "status", name[4:]
        try:
            values[name] = _fault_value(name, value)
        except ValueError as exc:
            raise HttpError(400, f"bad fault {part!r} in model {spec!r}: {exc}") from None
    return model, Faults(**values), raw


def due(after: int | None, sent: int, last: bool) -> bool:
    """Whether an ``*_after=N`` fault fires now, with ``sent`` tokens sent: at N, or just
    before the final line when N is beyond the end of the answer."""
    return after is not None and (after == sent or (last and after > sent))


def _fault_value(name: str, value: str | None) -> float | int:
    if name == "stall_headers":
        return math.inf if value is None else _seconds(value)
    if name == "slow":
        return _seconds(_required(value))
    if name in ("stall_after", "disconnect_after", "malformed_after", "error_after", "tokens"):
        count = int(_required(value))
        if count < 0 or (name == "tokens" and count > MAX_ANSWER_TOKENS):
            raise ValueError(
                f"must be 0..{MAX_ANSWER_TOKENS}" if name == "tokens" else "must be >= 0"
            )
        return count
    if name == "status":
        code = 500 if value is None else int(value)
        if not 400 <= code <= 599:
            raise ValueError("must be 400..599")
        return code
    raise ValueError("unknown fault")


def _required(value: str | None) -> str:
    if value is None:
        raise ValueError("needs a value")
    return value


def _seconds(text: str) -> float:
    seconds = float(text)
    if not 0 <= seconds <= math.inf:  # also rejects nan
        raise ValueError("must be >= 0 seconds")
    return seconds
