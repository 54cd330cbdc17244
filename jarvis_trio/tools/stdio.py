"""The stdio transport: an MCP server as a subprocess, JSON-RPC lines on its stdin/stdout.

Written here rather than taken from ``mcp.client.stdio.stdio_client``, which does run on
trio, for two reasons:

- its way out is fixed by module constants: 2 s after stdin closes, then SIGTERM, then
  2 s more before SIGKILL (and up to 2 s to reap), so a tool that ignores its cancel
  holds shutdown for 4 to 6 s, longer than the gateway's whole shutdown budget. Here the
  two bounds are parameters (:data:`STOP_GRACE`, :data:`KILL_AFTER`);
- it does not expose the process, so its pid cannot be logged or checked.

Everything above the byte stream stays the SDK's: :class:`mcp.ClientSession` speaks the
protocol over the two memory streams this yields, and each line is parsed with the SDK's
own ``jsonrpc_message_adapter``.

The server runs in a session (and process group) of its own, so a terminal's Ctrl-C
does not reach it before the host has cancelled its calls, and stopping it stops its
children too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass

import anyio
import mcp_types
import trio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.client.stdio import get_default_environment
from mcp.shared.message import SessionMessage

from jarvis_trio.tools import processes

log = logging.getLogger(__name__)

STOP_GRACE = 1.0
"""Seconds a server has to exit by itself after its stdin is closed."""

KILL_AFTER = 1.0
"""Seconds between SIGTERM to the server's process group and SIGKILL."""

MAX_LINE_BYTES = 64 * 1024 * 1024
"""A longer line from a server ends the connection (a server writing junk forever)."""

_CLOSED = (
    anyio.BrokenResourceError,
    anyio.ClosedResourceError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


@dataclass
class StdioConnection:
    process: trio.Process
    read_stream: MemoryObjectReceiveStream[SessionMessage | Exception]
    write_stream: MemoryObjectSendStream[SessionMessage]


@asynccontextmanager
async def open_stdio(
    command: str,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    *,
    stop_grace: float = STOP_GRACE,
    kill_after: float = KILL_AFTER,
) -> AsyncIterator[StdioConnection]:
    """Start the server; on the way out (cancelled or not) it is ended within
    ``stop_grace + kill_after`` seconds plus a reap: stdin closed, SIGTERM, SIGKILL.

    Raises :class:`OSError` if the command cannot be started.
    """
    process = await trio.lowlevel.open_process(
        [command, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**get_default_environment(), **(env or {})},
        cwd=cwd,
        start_new_session=True,
    )
    processes.started(process.pid)
    to_session, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    write_stream, from_session = anyio.create_memory_object_stream[SessionMessage](0)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_read_stdout, process, to_session)
            nursery.start_soon(_write_stdin, process, from_session, to_session)
            try:
                yield StdioConnection(process, read_stream, write_stream)
            finally:
                nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            for stream in (read_stream, write_stream, to_session, from_session):
                await stream.aclose()
            await stop_process(process, stop_grace=stop_grace, kill_after=kill_after)
            processes.stopped(process.pid)


async def _read_stdout(
    process: trio.Process, to_session: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    assert process.stdout is not None
    buffer = bytearray()
    async with to_session:
        try:
            while chunk := await process.stdout.receive_some(65536):
                # Only the new chunk is searched: a long line costs linear time, not
                # a rescan of everything buffered so far for every chunk.
                start = len(buffer)
                buffer += chunk
                lines: list[bytes] = []
                begin = 0
                while (end := buffer.find(b"\n", start)) >= 0:
                    lines.append(bytes(buffer[begin:end]))
                    begin = start = end + 1
                del buffer[:begin]
                if len(buffer) > MAX_LINE_BYTES:
                    await to_session.send(ValueError("MCP server wrote a line over 64 MiB"))
                    return
                for line in lines:
                    if line.strip():
                        await to_session.send(_parse(line))
        except _CLOSED:
            pass  # the session or the process is gone: the session sees the stream end


def _parse(line: bytes) -> SessionMessage | Exception:
    try:
        message = mcp_types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:
        log.warning("MCP server wrote a line that is not JSON-RPC: %.200r", line)
        return exc
    return SessionMessage(message)


async def _write_stdin(
    process: trio.Process,
    from_session: MemoryObjectReceiveStream[SessionMessage],
    to_session: MemoryObjectSendStream[SessionMessage | Exception],
) -> None:
    assert process.stdin is not None
    # Leaving (even cancelled) closes `from_session`, so a sender blocked on it (the
    # SDK's shielded courtesy cancel) fails at once instead of waiting out its bound.
    async with from_session:
        try:
            async for item in from_session:
                line = item.message.model_dump_json(by_alias=True, exclude_unset=True)
                await process.stdin.send_all(line.encode() + b"\n")
        except _CLOSED:
            # The server closed its stdin: end the session's reads too, or a request
            # would wait for an answer that cannot come.
            await to_session.aclose()


async def stop_process(process: trio.Process, *, stop_grace: float, kill_after: float) -> None:
    """Close stdin, wait ``stop_grace``; SIGTERM the group, wait ``kill_after``; SIGKILL.

    Whatever the server leaves in its process group is killed too. Call it shielded.
    """
    if process.stdin is not None:
        with suppress(*_CLOSED):
            await process.stdin.aclose()
    for signum, wait in ((None, stop_grace), (signal.SIGTERM, kill_after), (signal.SIGKILL, 2.0)):
        if signum is not None and process.returncode is None:
            _signal_group(process, signum)
        with trio.move_on_after(wait):
            await process.wait()
        if process.returncode is not None:
            break
    else:
        log.warning("MCP server process %d survived SIGKILL", process.pid)
    # Its children live on in its group after it exits: end them too. The group id
    # cannot be reused while any of them is alive.
    _signal_group(process, signal.SIGKILL)
    if process.stdout is not None:
        await process.stdout.aclose()


def _signal_group(process: trio.Process, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)
