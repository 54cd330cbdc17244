"""Agent mode of the asyncio variant: the original notes' ``agent_task`` running a tool.

A request with ``"jarvis": {"agent": true}`` makes the stream's agent task
(:meth:`benchmarks.asyncio_variant.streams.StreamRun.events` starts it with
``asyncio.create_task``) run :func:`run_agent` instead of a plain read: the
embedded model's planner (:func:`jarvis_trio.sim_answers.plan`, the same
decision ``jarvis-trio serve --backend sim`` makes, e.g. for
``use slow {"seconds": 30}``) picks the tool calls; the task runs them with
``asyncio.gather`` through the SDK's client (:mod:`.tools`), then answers with
their results. A prompt that names no tool is read as usual.

Cancellation is the notes' and nothing more: the stream's ``finally`` cancels
the agent task and waits for it 0.5 s at most ("Agent task cancel timeout: 0.5
seconds"). A tool call still running by then is left to itself.
"""

from __future__ import annotations

import asyncio
import threading

from benchmarks.asyncio_variant.backends import Emit, ThreadBackend
from benchmarks.asyncio_variant.tools import ToolHost
from jarvis_trio import logs, sim_answers
from jarvis_trio.backends.sim import count_words, text_pieces
from jarvis_trio.errors import InvalidRequest
from jarvis_trio.generation import GenerationRequest, GenerationResult, Usage


def agent_unavailable() -> InvalidRequest:
    """As :func:`jarvis_trio.agent.agent_unavailable`."""
    return InvalidRequest(
        "Agent mode needs tools: this server has no MCP servers configured (JARVIS_MCP_CONFIG).",
        param="jarvis.agent",
        code="agent_unavailable",
    )


async def run_agent(
    host: ToolHost,
    backend: ThreadBackend,
    job: GenerationRequest,
    cancelled: threading.Event,
    emit: Emit,
    *,
    trace: str,
) -> GenerationResult:
    """One agent step: the planned tool calls, then an answer with their results."""
    turns = [sim_answers.Turn(t.role, t.content, t.name) for t in job.messages]
    plan = sim_answers.plan(turns, tools=host.openai_tools())
    if not plan.calls:
        return await asyncio.to_thread(backend.read, job, cancelled, emit)
    logs.event("agent_step", trace=trace, step=1, tools=len(plan.calls))
    results = await asyncio.gather(*(host.call_tool(c.name, c.arguments) for c in plan.calls))
    said = "; ".join(f"{c.name} returned {r}" for c, r in zip(plan.calls, results, strict=True))
    pieces = list(text_pieces(f"Done: {said}."))
    for piece in pieces:
        emit(piece)
    return GenerationResult("stop", Usage(count_words(job), len(pieces)))
