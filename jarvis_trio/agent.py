"""Agent mode: one answer made of model calls and tool calls, as one tree of tasks.

Theory of operation
-------------------
A request with ``"jarvis": {"agent": true}`` runs :meth:`AgentBackend.generate`
in its stream's cancel scope, like any backend. It streams the model's answer
to the client; when the model calls tools of the configured MCP servers, it
runs the calls concurrently in a nursery of its own, appends their results to
the conversation and calls the model again, at most ``max_steps`` times. A
call of one of the *client's* tools ends the answer with
``finish_reason: "tool_calls"``, as without agent mode.

Everything the run starts is a child of the stream's scope: the model call
(its worker thread freed by the socket shutdown of :mod:`jarvis_trio.backends.upstream`)
and every tool call. So supersede, Stop, disconnect, the inactivity timeout and
shutdown end all of them through the one cancellation path. A cancelled tool
call sends ``notifications/cancelled`` to its MCP server and releases its
caller within the cancel budget (:class:`jarvis_trio.tools.host.ToolHost`),
so the run is joined within ``cancel_timeout`` of the cancel, inside the
stream's own join budget. The original asyncio server cancelled its
``agent_task`` and waited 0.5 s for it without being sure it ended; here the
nursery cannot exit before its children have.

Progress reaches the client as chunks with an empty delta and a
``jarvis.agent`` extension (tool call started, finished), which standard
clients ignore; only the model's text is ``content``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import trio

from jarvis_trio import agent_turns, logs
from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import (
    Backend,
    ChatTurn,
    Delta,
    FinishReason,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    Output,
    Sink,
    ToolCall,
    Usage,
)
from jarvis_trio.threads import raise_plain_cancelled
from jarvis_trio.wire import assemble

if TYPE_CHECKING:
    from jarvis_trio.tools.host import ToolHost


@runtime_checkable
class CancelNotes(Protocol):
    """What a stream tells about its cancel (a :class:`~jarvis_trio.streams.Stream` does)."""

    id: str
    cancelled_at: float | None

    @property
    def cancel_label(self) -> str | None: ...


@runtime_checkable
class Deadlines(Protocol):
    """A stream's timeouts, which an agent run moves while it works on purpose."""

    def touch(self) -> None:
        """Output is being made: the inactivity timeout starts again."""

    def expect_first_token(self) -> None:
        """A new model call: the (longer) first-token timeout applies until it speaks."""

    def allow(self, seconds: float) -> None:
        """Quiet on purpose for up to ``seconds`` (tool calls): not a stalled stream."""


class AgentBackend:
    """A backend that runs agent requests as agent runs and passes the rest through."""

    def __init__(
        self,
        inner: Backend,
        host: ToolHost,
        *,
        max_steps: int,
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.host = host
        self.max_steps = max_steps
        # A tool call's cancel is delivered within it; the run is joined within it too.
        self.cancel_timeout = host.cancel_timeout

    async def list_models(self) -> list[ModelInfo]:
        return await self.inner.list_models()

    async def resolve_model(self, requested: str | None) -> str:
        return await self.inner.resolve_model(requested)

    def check_request(self, request: GenerationRequest) -> None:
        self.inner.check_request(request)

    async def generate(self, request: GenerationRequest, sink: Sink) -> GenerationResult:
        if not request.agent:
            return await self.inner.generate(request, sink)
        run = AgentRun(self, request, sink)
        return await run.run()

    async def aclose(self) -> None:
        await self.inner.aclose()  # the tool host is closed with the app (tools.lifetime)


class _StepSink:
    """The client's sink for one model call: text goes through; tool calls are held
    until the call has ended, when the agent decides who runs them."""

    def __init__(self, sink: Sink, opened: bool) -> None:
        self.sink = sink
        self.was_opened = opened
        self.pieces: list[Output] = []  # the model's whole turn, for its history
        self.deadlines = sink if isinstance(sink, Deadlines) else None

    def opened(self, model: str | None = None) -> None:
        if not self.was_opened:
            self.was_opened = True
            self.sink.opened(model)

    async def send(self, piece: Output) -> None:
        self.pieces.append(piece)
        if isinstance(piece, str) or "tool_calls" not in piece.fields:
            await self.sink.send(piece)
            return
        rest = {k: v for k, v in piece.fields.items() if k != "tool_calls"}
        if piece.content or rest or piece.logprobs:
            await self.sink.send(Delta(piece.content, rest, piece.logprobs, piece.extra))
        elif self.deadlines is not None:
            self.deadlines.touch()  # the model is still writing its call: not inactive


class AgentRun:
    def __init__(self, agent: AgentBackend, request: GenerationRequest, sink: Sink) -> None:
        self.agent = agent
        self.request = request
        self.sink = sink
        self.trace = sink.id if isinstance(sink, CancelNotes) else None
        self.opened = False
        self.busy_until: float | None = None  # while tool calls run (trio time)
        self.prompt_tokens = 0
        self.completion_tokens = 0

    async def run(self) -> GenerationResult:
        try:
            return await self._steps()
        except trio.Cancelled:
            self._log_cancel()
            raise

    async def _steps(self) -> GenerationResult:
        host = self.agent.host
        turns: list[ChatTurn] = []
        client_tools = self.request.tools
        client_names = [t["function"]["name"] for t in client_tools]
        deadlines = self.sink if isinstance(self.sink, Deadlines) else None
        for step in range(1, self.agent.max_steps + 1):
            last = step == self.agent.max_steps
            server_tools = [] if last else host.openai_tools()  # the last step must answer
            tools = agent_turns.offered_tools(client_tools, server_tools)
            request = agent_turns.step_request(self.request, tools=tools, turns=turns)
            logs.event("agent_step", trace=self.trace, step=step, tools=len(server_tools))
            if deadlines is not None and step > 1:
                deadlines.expect_first_token()  # a longer prompt to read: as at the start
            step_sink = _StepSink(self.sink, self.opened)
            result = await self.agent.inner.generate(request, step_sink)
            self.opened = step_sink.was_opened
            self.prompt_tokens += result.usage.prompt_tokens
            self.completion_tokens += result.usage.completion_tokens
            message, _ = assemble(step_sink.pieces)
            calls = agent_turns.split_calls(message, client_names)
            if calls.client or not calls.server or last:
                if calls.server:  # said, never dropped in silence
                    reason = "client_tools_called" if calls.client else "max_steps"
                    await self._progress(agent_turns.skipped_event(step, calls.server, reason))
                await self._hand_over(calls.client)
                finish: FinishReason = "tool_calls" if calls.client else result.finish_reason
                if finish == "tool_calls" and not calls.client:
                    finish = "stop"
                return self._result(result, finish)
            text = str(message.get("content") or "")  # already streamed to the client
            turns.append(agent_turns.assistant_turn(text, calls.server))
            for call, answer in zip(
                calls.server, await self._run_calls(step, calls.server), strict=True
            ):
                turns.append(agent_turns.tool_turn(call, answer))
        raise AssertionError("the last step always returns")

    async def _run_calls(self, step: int, calls: tuple[ToolCall, ...]) -> list[str]:
        """Run the calls concurrently, in the run's nursery; what each tells the model."""
        answers = [""] * len(calls)
        # Quiet on purpose until the calls end: no inactivity timeout meanwhile (each
        # progress chunk would otherwise bring it back).
        self.busy_until = trio.current_time() + self.agent.host.tool_timeout
        self.busy_until += self.agent.cancel_timeout + 1.0

        async def one(i: int, call: ToolCall) -> None:
            await self._progress(agent_turns.started_event(step, call))
            arguments = agent_turns.arguments_of(call)
            if isinstance(arguments, str):
                outcome, text, duration_ms = "tool_error", f"Error: {arguments}.", 0.0
            else:
                result = await self.agent.host.call_tool(call.name, arguments, trace=self.trace)
                outcome, duration_ms = result.outcome, result.duration_ms
                text = result.text if result.ok else f"Error ({result.outcome}): {result.text}"
            answers[i] = text
            await self._progress(agent_turns.finished_event(step, call, outcome, duration_ms, text))

        try:
            async with trio.open_nursery() as nursery:
                for i, call in enumerate(calls):
                    nursery.start_soon(one, i, call)
        except BaseExceptionGroup as group:
            await raise_plain_cancelled(group)  # cancelled calls, as from any backend
            raise
        finally:
            self.busy_until = None
        return answers

    async def _hand_over(self, calls: tuple[ToolCall, ...]) -> None:
        """The client's own tool calls, streamed to it as the model made them."""
        for index, call in enumerate(calls):
            delta = {"index": index, **call.as_openai()}
            await self.sink.send(Delta(fields={"tool_calls": [delta]}))

    async def _progress(self, event: dict[str, Any]) -> None:
        if not self.opened:  # progress before any model output: the stream is open now
            self.opened = True
            self.sink.opened(None)
        await self.sink.send(Delta(extra={"jarvis": {"agent": event}}))
        if self.busy_until is not None and isinstance(self.sink, Deadlines):
            self.sink.allow(self.busy_until - trio.current_time())

    def _result(self, last: GenerationResult, finish: FinishReason) -> GenerationResult:
        usage = Usage(self.prompt_tokens, self.completion_tokens)
        return GenerationResult(finish, usage, model=last.model, extra=last.extra)

    def _log_cancel(self) -> None:
        notes = self.sink if isinstance(self.sink, CancelNotes) else None
        since = notes.cancelled_at if notes is not None else None
        join_ms = None if since is None else round((trio.current_time() - since) * 1000, 1)
        reason = (notes.cancel_label if notes is not None else None) or "deadline"
        logs.event("agent_cancelled", trace=self.trace, reason=reason, join_ms=join_ms)
        budget_ms = self.agent.cancel_timeout * 1000
        if join_ms is not None and join_ms > budget_ms:
            logs.event(
                "agent_timeout_on_cancel", trace=self.trace, join_ms=join_ms, budget_ms=budget_ms
            )


def agent_unavailable() -> InvalidRequest:
    return InvalidRequest(
        "Agent mode needs tools: this server has no MCP servers configured (JARVIS_MCP_CONFIG).",
        param="jarvis.agent",
        code="agent_unavailable",
    )
