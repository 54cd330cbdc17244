"""The process groups of the MCP servers running now, for a last-resort kill.

Kept apart from the transport so that the server's exit path can use it without
importing the MCP SDK.
"""

from __future__ import annotations

import os
import signal
from contextlib import suppress

_live: set[int] = set()


def started(pgid: int) -> None:
    _live.add(pgid)


def stopped(pgid: int) -> None:
    _live.discard(pgid)


def kill_all_now() -> int:
    """SIGKILL every MCP server still running: for a process about to exit in a hurry,
    where no task will run again (it is safe from another thread). Returns how many
    process groups were signalled."""
    groups = list(_live)
    for pgid in groups:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
    return len(groups)
