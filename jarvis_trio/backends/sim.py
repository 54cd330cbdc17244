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
import random
import time
from collections.abc import Iterator

import trio

from jarvis_trio.backends.base import (
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Sink,
    Usage,
)
from jarvis_trio.errors import NotFound
from jarvis_trio.relay import PieceRelay, relay_from_worker
from jarvis_trio.threads import CancelToken

MODEL_ID = "jarvis-sim"
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
        return [ModelInfo(id=MODEL_ID, owned_by="jarvis-trio")]

    async def resolve_model(self, requested: str | None) -> str:
        return resolve_sim_model(requested)

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        sink.opened()
        return await relay_from_worker(
            lambda token, relay: self._produce(request, token, relay), sink, limiter=self.limiter
        )

    def _produce(
        self, request: GenerationRequest, token: CancelToken, relay: PieceRelay
    ) -> GenerationResult:
        """Runs in the worker thread: paced, polling the token between tokens."""
        stops = StopFilter(request.stop)
        finish: FinishReason = "stop"
        generated = 0
        next_at = time.monotonic()
        for piece in sim_pieces(request, marked=self.mark_tokens):
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


def resolve_sim_model(requested: str | None) -> str:
    """The embedded model's only model; any other name is a 404."""
    if requested in (None, MODEL_ID):
        return MODEL_ID
    raise NotFound(
        f"The model {requested!r} does not exist; this server has {MODEL_ID!r}.",
        param="model",
        code="model_not_found",
    )
