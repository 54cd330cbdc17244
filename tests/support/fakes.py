"""In-trio fakes (a backend, a registry): autojump_clock sees them (it would not see a thread)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from jarvis_trio.generation import (
    ChatTurn,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Output,
    Sink,
    Usage,
)
from jarvis_trio.outcomes import Outcome
from jarvis_trio.registry import Claim
from jarvis_trio.registry.fencing import (
    Message,
    MessageKind,
    TakeResult,
    must_force,
    next_look,
    stop_result,
)


class Collect:
    """A sink that keeps what it is sent; ``first`` is set by the first piece."""

    def __init__(self) -> None:
        self.texts: list[Output] = []
        self.first = trio.Event()

    def opened(self, model: str | None = None) -> None:
        pass

    async def send(self, text: Output) -> None:
        self.texts.append(text)
        self.first.set()


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

    def check_request(self, request: GenerationRequest) -> None:
        return None

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


@dataclass
class FakeLease:
    generation: int
    expires: float


@dataclass
class FakeRegistryHub:
    """What Redis holds for the registry, in trio (autojump_clock sees it), shared by
    the :class:`FakeRegistry` of several session managers: "processes" of one test.

    It keeps the semantics of the Lua scripts of :mod:`jarvis_trio.registry.redis`;
    ``deliver=False`` loses every message (a broken subscription).
    """

    lease_seconds: float = 5.0
    round_trip: float = 0.001
    deliver: bool = True
    generations: dict[str, int] = field(default_factory=dict)
    leases: dict[str, FakeLease] = field(default_factory=dict)
    subscribers: list[trio.MemorySendChannel[Message]] = field(default_factory=list)

    def lease_of(self, session: str) -> FakeLease | None:
        lease = self.leases.get(session)
        if lease is not None and trio.current_time() >= lease.expires:
            del self.leases[session]
            return None
        return lease

    def publish(self, message: Message) -> None:
        if self.deliver:
            for channel in self.subscribers:
                channel.send_nowait(message)

    def take(self, session: str, generation: int, force: bool) -> TakeResult:
        current = self.generations.get(session, 0)
        if current > generation:
            return TakeResult.STALE
        self.generations[session] = generation
        lease = self.lease_of(session)
        expires = trio.current_time() + self.lease_seconds
        if lease is not None and lease.generation == generation:
            lease.expires = expires
            return TakeResult.TAKEN
        if lease is not None and not force:
            return TakeResult.BUSY
        self.leases[session] = FakeLease(generation, expires)
        return TakeResult.FORCED if lease is not None else TakeResult.TAKEN


@dataclass
class FakeRegistry:
    """Implements :class:`~jarvis_trio.registry.Registry` on a :class:`FakeRegistryHub`."""

    hub: FakeRegistryHub
    worker: str
    timeout: float = 0.5
    _freed: dict[str, trio.Event] = field(default_factory=dict)

    @property
    def lease_seconds(self) -> float:
        return self.hub.lease_seconds

    async def serve(
        self,
        on_cancel: Callable[[Message], None],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        send, receive = trio.open_memory_channel[Message](math.inf)
        self.hub.subscribers.append(send)
        task_status.started()
        async for message in receive:
            if message.kind is MessageKind.FINISHED:
                freed = self._freed.pop(message.session, None)
                if freed is not None:
                    freed.set()
            else:
                on_cancel(message)

    async def claim(self, owner: str, session_id: str, *, stop: bool = False) -> Claim:
        await trio.sleep(self.hub.round_trip)
        digest = f"{owner}/{session_id}"
        generation = self.hub.generations.get(digest, 0) + 1
        self.hub.generations[digest] = generation
        kind = MessageKind.STOP if stop else MessageKind.CANCEL
        self.hub.publish(Message(kind, digest, generation, self.worker))
        contended = self.hub.lease_of(digest) is not None
        return Claim(digest, generation, "label", contended, trio.current_time())

    async def _wait_lease(self, claim: Claim, deadline: float) -> tuple[TakeResult, bool]:
        waited = False
        while True:
            freed = self._freed.setdefault(claim.session, trio.Event())
            await trio.sleep(self.hub.round_trip)
            force = must_force(trio.current_time(), deadline)
            result = self.hub.take(claim.session, claim.generation, force)
            if result is not TakeResult.BUSY:
                return result, waited
            waited = True
            with trio.move_on_at(next_look(trio.current_time(), deadline)):
                await freed.wait()

    async def take(self, claim: Claim, deadline: float) -> TakeResult:
        result, _ = await self._wait_lease(claim, deadline)
        return result

    async def wait_stopped(self, claim: Claim, deadline: float) -> str:
        result, waited = await self._wait_lease(claim, deadline)
        if result is not TakeResult.STALE:
            await self.release(claim)
        return stop_result(result, waited or claim.contended)

    async def renew(self, claim: Claim) -> bool:
        await trio.sleep(self.hub.round_trip)
        return self.hub.take(claim.session, claim.generation, False) is not TakeResult.STALE

    async def release(self, claim: Claim) -> None:
        await trio.sleep(self.hub.round_trip)
        lease = self.hub.lease_of(claim.session)
        if lease is not None and lease.generation == claim.generation:
            del self.hub.leases[claim.session]
        self.hub.publish(
            Message(MessageKind.FINISHED, claim.session, claim.generation, self.worker)
        )

    async def aclose(self) -> None:
        return None


@dataclass
class RecordingObserver:
    """A session manager's :class:`~jarvis_trio.sessions.Observer` that keeps what it saw."""

    started: int = 0
    ended: list[Outcome] = field(default_factory=list)
    joins: list[tuple[bool, float]] = field(default_factory=list)  # (clean, seconds)
    refused: list[str] = field(default_factory=list)

    @property
    def joins_clean(self) -> int:
        return sum(clean for clean, _ in self.joins)

    @property
    def joins_timed_out(self) -> int:
        return sum(not clean for clean, _ in self.joins)

    def stream_started(self) -> None:
        self.started += 1

    def stream_ended(self, outcome: Outcome, seconds: float) -> None:
        self.ended.append(outcome)

    def join_finished(self, clean: bool, seconds: float) -> None:
        self.joins.append((clean, seconds))

    def cancel_to_closed(self, seconds: float) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def stream_refused(self, reason: str) -> None:
        self.refused.append(reason)
