"""Server-sent event bodies: a stream's own, and a viewer's copy read from its log."""

from __future__ import annotations

from collections.abc import AsyncIterator

from jarvis_trio.errors import TooManyRequests
from jarvis_trio.replay import REPLAY_BATCH, ReplayLog
from jarvis_trio.streams import Stream
from jarvis_trio.wire import DONE, ChunkFormat, sse, stream_ending

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
SSE_TYPE = "text/event-stream; charset=utf-8"


async def sse_body(stream: Stream, fmt: ChunkFormat, coalesce: float = 0.0) -> AsyncIterator[str]:
    # The role chunk goes out at once, unless output is waiting already (the usual
    # case: the upstream's first line opens the stream and carries its first piece):
    # then it leaves with that output, in one write instead of two.
    head = fmt.role()
    if not stream.has_output():
        yield head
        head = ""
    # Pieces leave the channel in the order they entered the replay log, so the
    # n-th piece here is the log's n-th: a viewer resumes after ``<id>:<n>``.
    seq = 0
    async for batch in stream.batches(coalesce):
        parts = [head]
        head = ""
        for piece in batch:
            seq += 1
            parts.append(fmt.piece(piece, seq))
        yield "".join(parts)
    yield head + stream_ending(fmt, stream.final_ending(), stream.tokens)


async def viewer_body(log: ReplayLog, after: int, extended: bool = False) -> AsyncIterator[str]:
    """A viewer's copy of a stream: what was sent after ``after``, then the rest live.

    Reads the log only: it never touches the stream, its session or its rules. A
    viewer that falls so far behind that the bound dropped pieces it had not read
    gets an error event (``viewer_fell_behind``) instead of a silent gap.
    """
    fmt = ChunkFormat(log.stream_id, log.model, log.created, extended_finish_reasons=extended)
    cursor = after
    if after == 0:
        truncated = log.after(0, limit=0).truncated
        yield fmt.role(jarvis={"viewer": True, "replay_truncated": truncated})
    while True:
        changed = log.changed()
        replay = log.after(cursor, limit=REPLAY_BATCH)
        if replay.truncated and cursor > 0:
            message = "This viewer fell behind the replay buffer; attach again to catch up."
            yield sse(TooManyRequests(message, code="viewer_fell_behind").body()) + DONE
            return
        if replay.pieces:
            cursor = replay.last
            yield "".join(
                fmt.piece(piece, replay.first + i) for i, piece in enumerate(replay.pieces)
            )
        elif log.ending is not None:
            break
        else:
            await changed.wait()
    yield stream_ending(fmt, log.ending, log.count)
