"""Sessions: the trio glue that carries out :mod:`jarvis_trio.rules`.

:mod:`~jarvis_trio.sessions.manager` is the entry point; the table carries out
the rules' actions, the runner runs one stream, the lease holds a session across
processes, and the watchers end streams whose clients left without a word.
"""

from jarvis_trio.sessions.manager import SessionManager
from jarvis_trio.sessions.observer import NullObserver, Observer
from jarvis_trio.sessions.reports import ManagerStatistics, RequestInfo, StopReport
from jarvis_trio.sessions.session import SessionKey

__all__ = [
    "ManagerStatistics",
    "NullObserver",
    "Observer",
    "RequestInfo",
    "SessionKey",
    "SessionManager",
    "StopReport",
]
