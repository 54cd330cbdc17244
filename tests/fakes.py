"""An in-trio fake backend: autojump_clock sees it (it would not see a thread)."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio

from jarvis_trio.backends.base import (
    ChatTurn,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Sink,
    Usage,
)


def job(prompt: str, **kw: object) -> GenerationRequest:
    return GenerationRequest(model="fake", messages=(ChatTurn("user", prompt),), **kw)  # type: ignore[arg-type]


@dataclass
class FakeBackend:
    """Streams ``<prompt>-<i>`` every ``interval`` seconds.

    ``die_after[prompt]``: seconds a cancelled stream of that prompt takes to
    die (shielded), modelling a slow or stuck upstream. ``silent_after[prompt]``:
    after that many tokens the stream goes quiet forever.
    """

    interval: float = 0.1
    tokens: int = 1000
    die_after: dict[str, float] = field(default_factory=dict)
    silent_after: dict[str, int] = field(default_factory=dict)
    starts: dict[str, float] = field(default_factory=dict)
    ends: dict[str, float] = field(default_factory=dict)
    name: str = "fake"

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("fake", "tests")]

    async def resolve_model(self, requested: str | None) -> str:
        return requested or "fake"

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        prompt = request.prompt
        self.starts[prompt] = trio.current_time()
        sink.opened()
        limit = min(self.tokens, request.max_tokens or self.tokens)
        try:
            for i in range(limit):
                if i == self.silent_after.get(prompt):
                    await trio.sleep_forever()
                await trio.sleep(self.interval)
                await sink.send(f"{prompt}-{i} ")
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.die_after.get(prompt, 0.0))
            raise
        finally:
            self.ends[prompt] = trio.current_time()
        finish = "length" if limit < self.tokens else "stop"
        return GenerationResult(finish, Usage(1, limit))  # type: ignore[arg-type]

    async def aclose(self) -> None:
        return None
