"""The embedded model (``--backend sim``): deterministic text, paced, in a worker thread.

It exists so the server runs with no Ollama at all, and it deliberately takes
the same path a real upstream does: the generator runs in a trio worker
thread that polls the cancellation token between tokens and sleeps on it, so
the default ``make run`` exercises the real thread machinery.

Answers are deterministic for a given prompt and ``seed``. A prompt that asks
for something long ("Long essay about AI") streams 600 tokens, tens of seconds
at the default pace, so the supersede scenario can be watched by hand.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import time
from collections.abc import Iterator

import trio

from jarvis_trio import sim_answers
from jarvis_trio.errors import InvalidRequest, NotFound
from jarvis_trio.generation import (
    Delta,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Sink,
    Usage,
    find_model,
)
from jarvis_trio.relay import PieceRelay, relay_from_worker
from jarvis_trio.threads import CancelToken

MODEL_ID = "jarvis-sim"
SIM_MODEL = ModelInfo(id=MODEL_ID, owned_by="jarvis-trio")
LONG_ANSWER_TOKENS = 600
_LONG_WORDS = ("long", "essay", "story", "detailed", "explain")

_VOCABULARY = (
    "the a model stream token answer cancel scope nursery thread socket session prompt "
    "server client trio latency budget join request reply signal queue worker upstream "
    "structured concurrency deadline shield cleanup event channel buffer limit timeout "
    "quickly cleanly always never each every first last next old new live idle final "
    "runs waits starts stops ends closes opens reads writes sends keeps drops holds "
    "because while when after before until unless so and but or then"
).split()


def answer_length(request: GenerationRequest) -> int:
    prompt = request.prompt.lower()
    if any(word in prompt for word in _LONG_WORDS):
        return LONG_ANSWER_TOKENS
    return 24 + 4 * min(len(prompt.split()), 40)


def sim_pieces(request: GenerationRequest, *, marked: bool = False) -> Iterator[str]:
    """The answer's tokens, one word each, as an endless-free finite iterator.

    ``marked``: each word carries ``~`` and four hex digits of the answer's hash,
    so answers to different prompts (or seeds) share no token.
    """
    digest = hashlib.sha256(f"{request.seed}|{request.prompt}".encode()).digest()
    mark = "~" + digest[:2].hex() if marked else ""
    rng = random.Random(digest)
    sentence_left = 0
    for i in range(answer_length(request)):
        word = rng.choice(_VOCABULARY)
        if sentence_left == 0:
            sentence_left = rng.randint(6, 14)
            word = word.capitalize()
        sentence_left -= 1
        word += mark
        if sentence_left == 0:
            word += "."
        yield word if i == 0 else " " + word


def count_words(request: GenerationRequest) -> int:
    return sum(len(turn.content.split()) for turn in request.messages)


class SimBackend:
    """The embedded model. ``tokens_per_second`` paces each stream."""

    name = "sim"

    def __init__(
        self,
        *,
        tokens_per_second: float,
        limiter: trio.CapacityLimiter | None = None,
        mark_tokens: bool = False,
    ) -> None:
        self.interval = 1.0 / tokens_per_second
        self.limiter = limiter
        self.mark_tokens = mark_tokens

    async def list_models(self) -> list[ModelInfo]:
        return [SIM_MODEL]

    async def resolve_model(self, requested: str | None) -> str:
        return resolve_sim_model(requested)

    def check_request(self, request: GenerationRequest) -> None:
        check_sim_request(request)

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        sink.opened()
        return await relay_from_worker(
            lambda token, relay: self._produce(request, token, relay), sink, limiter=self.limiter
        )

    def _produce(
        self, request: GenerationRequest, token: CancelToken, relay: PieceRelay
    ) -> GenerationResult:
        """Runs in the worker thread: paced, polling the token between tokens."""
        answer = plan_for(request)
        if answer.calls:
            token.wait(self.interval)
            token.raise_if_cancelled()
            for call in tool_call_deltas(answer.calls):
                relay.put(call)
            return GenerationResult(
                finish_reason="tool_calls",
                usage=Usage(count_words(request), len(answer.calls)),
            )
        stops = StopFilter(request.stop)
        finish: FinishReason = "stop"
        generated = 0
        next_at = time.monotonic()
        pieces = (
            sim_pieces(request, marked=self.mark_tokens)
            if answer.text is None
            else text_pieces(answer.text)
        )
        for piece in pieces:
            if request.max_tokens is not None and generated >= request.max_tokens:
                finish = "length"
                break
            next_at += self.interval
            token.wait(max(0.0, next_at - time.monotonic()))
            token.raise_if_cancelled()
            generated += 1
            if out := stops.feed(piece):
                relay.put(out)
            if stops.stopped:
                break
        if tail := stops.flush():
            relay.put(tail)
        return GenerationResult(
            finish_reason=finish,
            usage=Usage(prompt_tokens=count_words(request), completion_tokens=generated),
        )

    async def aclose(self) -> None:
        return None


class StopFilter:
    """Applies stop sequences to a stream of pieces. Pure; shared by both variants.

    The last ``len(longest stop) - 1`` characters are held back, so a stop string
    that straddles two pieces is never half-sent.
    """

    def __init__(self, stops: tuple[str, ...]) -> None:
        self._stops = stops
        self._hold = max((len(stop) for stop in stops), default=1) - 1
        self._text = ""
        self._sent = 0
        self.stopped = False

    def feed(self, piece: str) -> str:
        """Add a piece; the text that may be sent now ('' while held back or stopped)."""
        self._text += piece
        found = [i for i in (self._text.find(stop) for stop in self._stops) if i >= 0]
        if found:
            self._text = self._text[: min(found)]
            self.stopped = True
            return ""
        safe = len(self._text) - self._hold
        if safe <= self._sent:
            return ""
        out, self._sent = self._text[self._sent : safe], safe
        return out

    def flush(self) -> str:
        """What was held back (up to a stop string, if one appeared)."""
        out, self._sent = self._text[self._sent :], len(self._text)
        return out


# What the embedded model cannot do; asked for, each is a 400 that names it.
_SIM_UNSUPPORTED = {
    "logprobs": "the embedded model has no token probabilities",
    "top_logprobs": "the embedded model has no token probabilities",
    "logit_bias": "the embedded model has no tokenizer to bias",
}


def check_sim_request(request: GenerationRequest) -> None:
    """Refuse, with a 400 naming it, what the embedded model cannot honour."""
    for name, why in _SIM_UNSUPPORTED.items():
        if request.options.get(name):
            raise InvalidRequest(
                f"{name} is not supported here: {why}.", param=name, code="unsupported_parameter"
            )


def plan_for(request: GenerationRequest) -> sim_answers.Plan:
    """The embedded model's answer plan for ``request`` (see :mod:`jarvis_trio.sim_answers`)."""
    names = {c.id: c.name for turn in request.messages for c in turn.tool_calls}
    turns = [
        sim_answers.Turn(t.role, t.content, names.get(t.tool_call_id or "") or t.name)
        for t in request.messages
    ]
    fmt = request.response_format or {}
    schema = None
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema") or {}
        schema = spec.get("schema") if isinstance(spec, dict) else None
        schema = schema if isinstance(schema, dict) else {"type": "object"}
    choice = request.options.get("tool_choice")
    tools = request.tools
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        tools = [t for t in tools if t["function"].get("name") == wanted]
    answer = sim_answers.plan(
        turns,
        tools=tools,
        json_schema=schema,
        json_mode=fmt.get("type") == "json_object",
        parallel=request.options.get("parallel_tool_calls") is not False,
    )
    forced = choice == "required" or isinstance(choice, dict)
    if forced and not answer.calls and tools and answer.text is None:
        first = tools[0]["function"]
        params = first.get("parameters")
        example = sim_answers.example_for(params) if isinstance(params, dict) else {}
        answer = sim_answers.Plan(
            calls=(sim_answers.Call(first["name"], example if isinstance(example, dict) else {}),)
        )
    return answer


def tool_call_deltas(calls: tuple[sim_answers.Call, ...]) -> list[Delta]:
    """One streamed piece per call, as OpenAI streams a call that arrives whole."""
    return [
        Delta(
            fields={
                "tool_calls": [
                    {
                        "index": i,
                        "id": "call_" + secrets.token_hex(12),
                        "type": "function",
                        "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                    }
                ]
            }
        )
        for i, call in enumerate(calls)
    ]


def text_pieces(text: str) -> Iterator[str]:
    """A fixed text as pieces of a word each (a JSON answer too)."""
    for i, word in enumerate(text.split(" ")):
        yield word if i == 0 else " " + word


def resolve_sim_model(requested: str | None) -> str:
    """The embedded model's only model (``jarvis-sim:latest`` too, as Ollama names it);
    any other name is a 404."""
    if requested is None or find_model([SIM_MODEL], requested) is not None:
        return MODEL_ID
    raise NotFound(
        f"The model {requested!r} does not exist; this server has {MODEL_ID!r}.",
        param="model",
        code="model_not_found",
    )
