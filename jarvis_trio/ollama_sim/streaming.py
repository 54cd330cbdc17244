"""An answer on the wire: tokens paced, faults fired, streamed as NDJSON or sent whole.

:func:`generate` plays a request's :class:`~jarvis_trio.ollama_sim.answers.Answer`
and its :class:`~jarvis_trio.ollama_sim.faults.Faults`; a :class:`Writer` puts it
on a :class:`~jarvis_trio.ollama_sim.connection.Conn` through the connection's
public interface (``head``, ``send``, ``send_simple``, ``count_token``).
"""

from __future__ import annotations

import abc
import time
from typing import Any

import h11
import trio

from jarvis_trio.ollama_sim.answers import answer_for, load_response, prompt_tokens
from jarvis_trio.ollama_sim.connection import Conn, Disconnect
from jarvis_trio.ollama_sim.faults import due
from jarvis_trio.ollama_sim.records import RequestRecord
from jarvis_trio.ollama_sim.requests import Generation
from jarvis_trio.ollama_sim.wire import JSON_TYPE, NDJSON_TYPE, created_at, dumps


async def generate(
    conn: Conn,
    request: RequestRecord,
    gen: Generation,
    *,
    tokens_per_second: float,
    answer_tokens: int,
) -> None:
    """Answer ``gen`` on ``conn``, its faults included; raises :class:`Disconnect`."""
    faults = gen.faults
    started = time.monotonic()
    if faults.stall_headers is not None:
        await trio.sleep(faults.stall_headers)
    if faults.status is not None:
        request.outcome = "error"
        error = dumps({"error": "simulated internal error"})
        await conn.send_simple(faults.status, error, JSON_TYPE)
        return
    if not gen.prompt:
        request.outcome = "completed"
        await conn.send_simple(200, dumps(load_response(gen)), JSON_TYPE)
        return
    answer = answer_for(gen, answer_tokens if faults.tokens is None else faults.tokens)
    pieces = answer.pieces
    writer: Writer = Streaming(conn, gen) if gen.stream else Buffered(conn, gen)
    await writer.start()
    if gen.think and gen.kind == "chat":
        await writer.thinking("Thinking it over.")
    if answer.calls:
        await writer.tool_calls(answer.tool_calls_json())
    interval = faults.slow if faults.slow is not None else 1.0 / tokens_per_second
    eval_started = trio.current_time()
    next_at = eval_started
    for sent in range(len(pieces) + 1):
        last = sent == len(pieces)
        if due(faults.malformed_after, sent, last):
            await writer.malformed()
        if due(faults.error_after, sent, last):
            request.outcome = "error"
            await writer.error("simulated failure")
            return
        if due(faults.disconnect_after, sent, last):
            raise Disconnect
        if due(faults.stall_after, sent, last):
            await trio.sleep_forever()
        if last:
            break
        next_at += interval
        await trio.sleep_until(next_at)
        await writer.token(pieces[sent])
    prompt_count = prompt_tokens(gen.prompt)
    request.outcome = "completed"
    await writer.finish(
        {
            "done_reason": answer.done_reason,
            "total_duration": int((time.monotonic() - started) * 1e9),
            "load_duration": 1_000_000,
            "prompt_eval_count": prompt_count,
            "prompt_eval_duration": prompt_count * 100_000,
            "eval_count": len(pieces),
            "eval_duration": int((trio.current_time() - eval_started) * 1e9),
        }
    )


def _logprob(token: str, top: int) -> dict[str, Any]:
    """A made-up log probability in Ollama's shape (``logprobs: true``)."""
    entry: dict[str, Any] = {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
    if top:
        entry["top_logprobs"] = [
            {"token": token, "logprob": -0.25, "bytes": list(token.encode())}
        ] + [{"token": f"alt{i}", "logprob": -3.0 - i, "bytes": []} for i in range(top - 1)]
    return entry


class Writer(abc.ABC):
    """Where an answer's tokens go: a stream of lines, or one object at the end."""

    def __init__(self, conn: Conn, gen: Generation) -> None:
        self.conn = conn
        self.gen = gen

    def chunk(self, content: str, done: bool, **message: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"model": self.gen.model, "created_at": created_at()}
        if self.gen.kind == "chat":
            out["message"] = {"role": "assistant", "content": content, **message}
        else:
            out["response"] = content
        out["done"] = done
        if self.gen.logprobs and content:
            out["logprobs"] = [_logprob(content, self.gen.top_logprobs)]
        return out

    async def thinking(self, text: str) -> None:
        """The model's reasoning before its answer (``think``)."""
        await self.extra_line(thinking=text)

    async def tool_calls(self, calls: list[dict[str, Any]]) -> None:
        """Tool calls, in one message as Ollama sends them."""
        await self.extra_line(tool_calls=calls)

    @abc.abstractmethod
    async def extra_line(self, **message: Any) -> None:
        """A message with fields besides content (thinking, tool calls)."""

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def token(self, piece: str) -> None: ...

    @abc.abstractmethod
    async def malformed(self) -> None: ...

    @abc.abstractmethod
    async def error(self, message: str) -> None: ...

    @abc.abstractmethod
    async def finish(self, final: dict[str, Any]) -> None: ...


class Streaming(Writer):
    """One chunk per line, sent as it is made."""

    async def start(self) -> None:
        await self.conn.send(self.conn.head(200, [("content-type", NDJSON_TYPE)]))

    async def line(self, data: bytes, *, last: bool = False) -> None:
        events: list[h11.Event] = [h11.Data(data=data + b"\n")]
        if last:
            events.append(h11.EndOfMessage())
        await self.conn.send(*events)

    async def token(self, piece: str) -> None:
        self.conn.count_token()  # first: the record may run ahead of the wire, never behind
        await self.line(dumps(self.chunk(piece, done=False)))

    async def extra_line(self, **message: Any) -> None:
        await self.line(dumps(self.chunk("", done=False, **message)))

    async def malformed(self) -> None:
        whole = dumps(self.chunk("x", done=False))
        await self.line(whole[: whole.index(b',"done"')])

    async def error(self, message: str) -> None:
        await self.line(dumps({"error": message}), last=True)

    async def finish(self, final: dict[str, Any]) -> None:
        await self.line(dumps({**self.chunk("", done=True), **final}), last=True)


class Buffered(Writer):
    """``stream: false``: nothing is sent until the answer is complete."""

    def __init__(self, conn: Conn, gen: Generation) -> None:
        super().__init__(conn, gen)
        self.text = ""
        self.tokens = 0
        self.truncate = False
        self.message: dict[str, Any] = {}

    async def start(self) -> None:
        return None

    async def token(self, piece: str) -> None:
        self.text += piece
        self.tokens += 1

    async def extra_line(self, **message: Any) -> None:
        self.message.update(message)

    async def malformed(self) -> None:
        self.truncate = True

    async def error(self, message: str) -> None:
        await self.conn.send_simple(500, dumps({"error": message}), JSON_TYPE)

    async def finish(self, final: dict[str, Any]) -> None:
        body = dumps({**self.chunk(self.text, done=True, **self.message), **final})
        if self.truncate:
            body = body[: len(body) // 2]
        for _ in range(self.tokens):
            self.conn.count_token()
        await self.conn.send_simple(200, body, JSON_TYPE)
