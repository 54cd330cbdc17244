"""What the simulated models answer: the words, where they stop, a model load. Pure: no I/O.

The words are drawn by a PRNG seeded with the prompt (and ``options.seed``); when
tools or JSON are asked for, :mod:`jarvis_trio.sim_answers` (shared with the
embedded model) decides instead.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Literal

from jarvis_trio import sim_answers
from jarvis_trio.ollama_sim.requests import Generation
from jarvis_trio.ollama_sim.wire import created_at

VOCABULARY = (
    "the a an model token stream answer socket thread nursery scope cancel deadline "
    "upstream gateway client server session prompt reply queue buffer channel signal "
    "worker request response header chunk line byte clock timer budget limit "
    "quick slow idle live old new first last next every each some "
    "reads writes sends waits stops starts ends closes opens holds keeps drops "
    "because while when after before until so and but or then"
).split()


def answer_pieces(prompt: str, seed: int | None, count: int) -> list[str]:
    """The full answer for a prompt, as tokens: ``["word", " word", ...]``."""
    rng = random.Random(hashlib.sha256(f"{seed}|{prompt}".encode()).digest())
    words = [rng.choice(VOCABULARY) for _ in range(count)]
    return [word if i == 0 else " " + word for i, word in enumerate(words)]


def plan_answer(
    pieces: list[str], num_predict: int | None, stop: tuple[str, ...]
) -> tuple[list[str], Literal["stop", "length"]]:
    """The tokens actually sent and the ``done_reason``.

    Computed up front, so a stop string that straddles two tokens is cut
    exactly: Ollama holds such a partial match back, and so the client never
    sees any of the stop string.
    """
    reason: Literal["stop", "length"] = "stop"
    if num_predict is not None and num_predict < len(pieces):
        pieces, reason = pieces[:num_predict], "length"
    text = "".join(pieces)
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    if not cuts:
        return pieces, reason
    cut, kept, pos = min(cuts), [], 0
    for piece in pieces:
        if pos + len(piece) > cut:
            if cut > pos:
                kept.append(piece[: cut - pos])
            break
        kept.append(piece)
        pos += len(piece)
    return kept, "stop"


def prompt_tokens(prompt: str) -> int:
    return max(1, len(prompt.split()))


@dataclass(frozen=True)
class Answer:
    """What to send: tool calls, or the tokens and the ``done_reason`` they end with."""

    calls: tuple[sim_answers.Call, ...]
    pieces: list[str]
    done_reason: Literal["stop", "length"]

    def tool_calls_json(self) -> list[dict[str, Any]]:
        """The calls, in one message as Ollama sends them."""
        return [{"function": {"name": c.name, "arguments": c.arguments}} for c in self.calls]


def answer_for(gen: Generation, count: int) -> Answer:
    """The answer to ``gen``, ``count`` tokens long before ``num_predict`` and ``stop``."""
    planned = gen.plan() if gen.kind == "chat" else sim_answers.Plan()
    words = (
        answer_pieces(gen.prompt, gen.seed, count)
        if planned.text is None
        else [w if i == 0 else " " + w for i, w in enumerate(planned.text.split(" "))]
    )
    pieces, done_reason = plan_answer([] if planned.calls else words, gen.num_predict, gen.stop)
    return Answer(planned.calls, pieces, done_reason)


def load_response(gen: Generation) -> dict[str, Any]:
    """A model load (no messages, no prompt): one ``done`` object, ``done_reason: load``."""
    out: dict[str, Any] = {"model": gen.model, "created_at": created_at()}
    if gen.kind == "chat":
        out["message"] = {"role": "assistant", "content": ""}
    else:
        out["response"] = ""
    return {**out, "done": True, "done_reason": "load"}
