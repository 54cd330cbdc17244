"""The embedded model: deterministic text, paced in a worker thread, cancellable."""

from __future__ import annotations

import pytest
import trio

from jarvis_trio.backends.sim import (
    LONG_ANSWER_TOKENS,
    MODEL_ID,
    SimBackend,
    StopFilter,
    sim_pieces,
)
from jarvis_trio.errors import NotFound
from jarvis_trio.generation import ChatTurn, GenerationRequest, Output
from tests.support.helpers import deadline


def req(prompt: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(model=MODEL_ID, messages=(ChatTurn("user", prompt),), **kw)  # type: ignore[arg-type]


class ListSink:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.outputs: list[Output] = []
        self.was_opened = False

    def opened(self, model: str | None = None) -> None:
        self.was_opened = True

    async def send(self, text: Output) -> None:
        self.outputs.append(text)
        self.pieces.append(text if isinstance(text, str) else text.content)
        await trio.lowlevel.checkpoint()


def test_answers_are_deterministic_and_depend_on_prompt_and_seed() -> None:
    assert list(sim_pieces(req("hello"))) == list(sim_pieces(req("hello")))
    assert list(sim_pieces(req("hello"))) != list(sim_pieces(req("goodbye")))
    assert list(sim_pieces(req("hello", seed=1))) != list(sim_pieces(req("hello", seed=2)))


def test_long_prompts_get_long_answers() -> None:
    assert len(list(sim_pieces(req("Long essay about AI")))) == LONG_ANSWER_TOKENS
    short = list(sim_pieces(req("What is 2+2?")))
    assert 24 <= len(short) < 100
    assert not short[0].startswith(" ") and all(p.startswith(" ") for p in short[1:])


@deadline(10)
async def test_generate_streams_every_piece_through_a_worker_thread() -> None:
    backend = SimBackend(tokens_per_second=5000)
    sink = ListSink()
    result = await backend.generate(req("What is 2+2?"), sink)
    assert sink.was_opened
    assert sink.pieces == list(sim_pieces(req("What is 2+2?")))
    assert result.finish_reason == "stop"
    assert result.usage.prompt_tokens == 3
    assert result.usage.completion_tokens == len(sink.pieces)


@deadline(10)
async def test_max_tokens_ends_with_length() -> None:
    sink = ListSink()
    result = await SimBackend(tokens_per_second=5000).generate(req("hi", max_tokens=4), sink)
    assert len(sink.pieces) == 4
    assert result.finish_reason == "length"


@deadline(10)
async def test_stop_sequence_cuts_the_answer_before_it() -> None:
    full = "".join(sim_pieces(req("What is 2+2?")))
    stop = full.split()[3]
    sink = ListSink()
    result = await SimBackend(tokens_per_second=5000).generate(
        req("What is 2+2?", stop=(stop,)), sink
    )
    text = "".join(sink.pieces)
    assert stop not in text
    assert full.startswith(text)
    assert result.finish_reason == "stop"


@deadline(10)
async def test_cancel_stops_the_thread_between_tokens_and_frees_its_slot() -> None:
    limiter = trio.CapacityLimiter(2)
    backend = SimBackend(tokens_per_second=50, limiter=limiter)
    sink = ListSink()
    with trio.move_on_after(0.25) as scope:
        await backend.generate(req("Long essay about AI"), sink)
    assert scope.cancelled_caught
    assert 0 < len(sink.pieces) < LONG_ANSWER_TOKENS
    assert limiter.borrowed_tokens == 0


async def test_models() -> None:
    backend = SimBackend(tokens_per_second=1)
    assert [m.id for m in await backend.list_models()] == [MODEL_ID]
    assert await backend.resolve_model(None) == MODEL_ID
    with pytest.raises(NotFound):
        await backend.resolve_model("gpt-4o")


@deadline(10)
async def test_a_stop_sequence_straddling_two_tokens_is_never_half_sent() -> None:
    """Found in review: with stop 'ch se', 'Closes unless each' leaked 'ch'."""
    full = "".join(sim_pieces(req("What is 2+2?")))
    words = full.split()
    stop = words[4][-2:] + " " + words[5][:2]  # spans the boundary of two tokens
    sink = ListSink()
    await SimBackend(tokens_per_second=5000).generate(req("What is 2+2?", stop=(stop,)), sink)
    text = "".join(sink.pieces)
    assert text == full[: full.index(stop)]


def test_stop_filter_holds_back_only_what_could_start_a_stop_string() -> None:
    stops = StopFilter(("ch se",))  # 5 characters: the last 4 are held back
    sent = [stops.feed(p) for p in ["Closes", " unless", " each", " session"]]
    assert sent == ["Cl", "oses un", "less ", ""]
    assert stops.stopped
    assert stops.flush() == "ea"
    assert "".join(sent) + "ea" == "Closes unless each session".split("ch se")[0]


def test_stop_filter_without_stops_passes_everything_through() -> None:
    stops = StopFilter(())
    assert [stops.feed(p) for p in ["a", " b", " c"]] == ["a", " b", " c"]
    assert stops.flush() == ""
    assert not stops.stopped
