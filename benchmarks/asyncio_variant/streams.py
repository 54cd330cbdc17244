"""One request's stream, as the notes' generator: register, read in a thread, clean up.

Theory of operation
-------------------
:meth:`StreamRun.events` is an async generator run by the task that serves the
request: for a streaming response, the task Starlette runs the body in; for a
plain JSON one, the request's own task. On its first step it:

1. builds the notes' entry with ``task=asyncio.current_task()`` and calls
   ``registry.register(entry)``, which cancels the session's previous stream and
   ``wait_for``\\ s it (2 s at most) before registering this one;
2. logs ``stream_start`` and starts the "agent task", which awaits
   ``asyncio.to_thread(backend.read, ...)``; the thread hands each piece to the
   event loop (``loop.call_soon_threadsafe``) into an unbounded queue;
3. yields each piece as it comes, then one :class:`~jarvis_trio.outcomes.Ending`.

When the registry cancels the task, ``CancelledError`` lands in the queue wait;
the generator catches it (the entry says why: ``superseded`` or ``stopped``) and
yields that ending, so the client gets our final chunk and ``[DONE]``. Any other
cancellation (Starlette's, on client disconnect) propagates.

The generator's ``finally`` is the notes' "cancel agent_task, pop registry,
clear flag": it cancels the agent task and waits 0.5 s for it, pops the entry,
clears the cancel flag and logs ``stream_end``.

Known weaknesses (kept on purpose: this is the baseline)
-------------------------------------------------------
* Cancelling the agent task abandons ``asyncio.to_thread``; the thread runs on.
* The ``finally`` clears the flag a few event-loop turns after the registry set
  it, long before a thread waiting for its next line can look: unless a line
  lands in that millisecond, a superseded stream's thread misses the flag and
  reads its whole answer (into a queue no one reads), keeping its upstream
  request and its executor thread.
* A client disconnect cancels the task but sets no flag at all.
* The queue is unbounded: a client that stops reading is buffered without limit.
* An agent request's task (:mod:`.agent`) runs MCP tool calls; after the 0.5 s
  wait a call still running is left to itself (nothing else ends it).
* One timeout, ``JARVIS_STREAM_INACTIVITY_SECONDS`` (the notes' 120 s), on every
  wait for the next piece, the first one included; the thread is not told.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from benchmarks.asyncio_variant.agent import run_agent
from benchmarks.asyncio_variant.backends import Emit, ReadCancelled, ThreadBackend
from benchmarks.asyncio_variant.registry import StreamEntry, StreamRegistry
from benchmarks.asyncio_variant.tools import ToolHost
from jarvis_trio import logs
from jarvis_trio.errors import ApiError, ServerError, UpstreamTimeout
from jarvis_trio.generation import GenerationRequest
from jarvis_trio.outcomes import Ending, Outcome
from jarvis_trio.rules import CancelReason

# The notes' "Agent task cancel timeout: 0.5 seconds (line 3357)".
AGENT_CANCEL_TIMEOUT = 0.5


def new_stream_id() -> str:
    """As :func:`jarvis_trio.streams.new_stream_id`."""
    return "chatcmpl-" + secrets.token_hex(12)


@dataclass(frozen=True, slots=True)
class _Finished:
    """The agent task's last word: how the read ended."""

    ending: Ending


class StreamRun:
    def __init__(
        self,
        *,
        registry: StreamRegistry,
        backend: ThreadBackend,
        job: GenerationRequest,
        session_id: str | None,
        request_id: str,
        inactivity_seconds: float,
        tools: ToolHost | None = None,
    ) -> None:
        self.id = new_stream_id()
        self.created = int(time.time())
        self.registry = registry
        self.backend = backend
        self.job = job
        self.session_id = session_id
        self.request_id = request_id
        self.inactivity_seconds = inactivity_seconds
        self.tools = tools  # set for an agent request (agent mode: .agent)
        self.tokens = 0

    async def events(self) -> AsyncIterator[str | Ending]:
        """Each piece of text, then exactly one :class:`Ending`."""
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        entry = StreamEntry(trace_id=self.id, session_id=self.session_id, task=task)
        queue: asyncio.Queue[str | _Finished] = asyncio.Queue()
        agent_task: asyncio.Task[None] | None = None
        started_at: float | None = None
        ending: Ending | None = None
        try:
            try:
                await self.registry.register(entry)
                started_at = loop.time()
                logs.event(
                    "stream_start", trace=self.id, session=self.session_id, request=self.request_id
                )

                def emit(text: str) -> None:  # in the reader thread
                    loop.call_soon_threadsafe(queue.put_nowait, text)

                agent_task = asyncio.create_task(self._agent(entry, queue, emit))
                while ending is None:
                    try:
                        item = await asyncio.wait_for(queue.get(), self.inactivity_seconds)
                    except TimeoutError:
                        message = f"No output for {self.inactivity_seconds:g} s; stream ended."
                        error = UpstreamTimeout(message, code="inactivity_timeout")
                        ending = Ending(Outcome.INACTIVITY, error=error)
                        break
                    if isinstance(item, _Finished):
                        ending = item.ending
                    else:
                        self.tokens += 1
                        yield item
            except asyncio.CancelledError:
                if entry.reason is None:
                    raise  # not the registry's: the client left, or the server is stopping
                task.uncancel()
                ending = Ending.cancelled(entry.reason)
            yield ending
        finally:
            # The notes' finally: cancel agent_task, pop registry, clear flag. The
            # shield keeps wait_for's timeout from cancelling (and waiting) again:
            # 0.5 s, then the task is left to itself.
            if agent_task is not None:
                cancelled_at = loop.time()
                running = agent_task.cancel()  # False: it had ended
                try:
                    with contextlib.suppress(asyncio.CancelledError):
                        await asyncio.wait_for(asyncio.shield(agent_task), AGENT_CANCEL_TIMEOUT)
                except TimeoutError:
                    logs.event(
                        "agent_timeout_on_cancel",
                        level=logging.WARNING,
                        trace=self.id,
                        budget_ms=AGENT_CANCEL_TIMEOUT * 1000,
                    )
                if running and self.tools is not None:
                    join_ms = round((loop.time() - cancelled_at) * 1000, 1)
                    logs.event("agent_cancelled", trace=self.id, join_ms=join_ms)
            if started_at is not None:
                await self.registry.pop(self.id)
                entry.cancelled.clear()
                if ending is None:
                    ending = Ending.cancelled(CancelReason.DISCONNECTED)
                logs.event(
                    "stream_end",
                    trace=self.id,
                    session=self.session_id,
                    duration_ms=round((loop.time() - started_at) * 1000, 1),
                    outcome=ending.outcome.value,
                    tokens=self.tokens,
                )

    async def collect(self) -> tuple[str, Ending]:
        """The whole answer (the non-streaming path), in the caller's task."""
        parts: list[str] = []
        ending: Ending | None = None
        # To the generator's end, so its finally runs here, not later at GC.
        async for item in self.events():
            if isinstance(item, Ending):
                ending = item
            else:
                parts.append(item)
        assert ending is not None, "events() ended without an Ending"
        return "".join(parts), ending

    async def _agent(
        self,
        entry: StreamEntry,
        queue: asyncio.Queue[str | _Finished],
        emit: Emit,
    ) -> None:
        try:
            if self.tools is not None:
                result = await run_agent(
                    self.tools, self.backend, self.job, entry.cancelled, emit, trace=self.id
                )
            else:
                result = await asyncio.to_thread(self.backend.read, self.job, entry.cancelled, emit)
        except ReadCancelled:
            # The thread saw the flag: the stream was cancelled (and normally the
            # generator knows already; this covers a cancel it did not see).
            reason = entry.reason or CancelReason.DISCONNECTED
            queue.put_nowait(_Finished(Ending.cancelled(reason)))
        except ApiError as exc:
            queue.put_nowait(_Finished(Ending(Outcome.UPSTREAM_ERROR, error=exc)))
        except Exception:
            logs.log.exception("stream_failed trace=%s", self.id)
            error = ServerError("The model backend failed.")
            queue.put_nowait(_Finished(Ending(Outcome.ERROR, error=error)))
        else:
            # Every emit was scheduled on the loop before the thread returned,
            # so every piece is in the queue ahead of this.
            queue.put_nowait(_Finished(Ending.completed(result)))
