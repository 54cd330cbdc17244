"""One line per event, logfmt (``ts=… level=info stream_start trace=… session=…``) or JSON.

The event name is a bare logfmt key, so ``grep 'stream_start trace=abc'``
works as in the original notes.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

LOGGER_NAME = "jarvis_trio"
log = logging.getLogger(LOGGER_NAME)


def event(name: str, /, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event. ``None`` fields are left out."""
    if log.isEnabledFor(level):
        clean = {k: v for k, v in fields.items() if v is not None}
        log.log(level, name, extra={"jarvis_event": name, "jarvis_fields": clean})


def _logfmt_value(value: Any) -> str:
    text = f"{value:.1f}" if isinstance(value, float) else str(value)
    if text == "" or any(c in text for c in ' ="\\') or not text.isprintable():
        return json.dumps(text)
    return text


def _timestamp(record: logging.LogRecord) -> str:
    ms = int(record.msecs)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{ms:03d}Z"


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        head = f"ts={_timestamp(record)} level={record.levelname.lower()}"
        name = getattr(record, "jarvis_event", None)
        if name is None:
            line = f"{head} logger={record.name} msg={_logfmt_value(record.getMessage())}"
        else:
            fields = getattr(record, "jarvis_fields", {})
            pairs = " ".join(f"{k}={_logfmt_value(v)}" for k, v in fields.items())
            line = f"{head} {name} {pairs}".rstrip()
        if record.exc_info:
            line += " exc=" + _logfmt_value(self.formatException(record.exc_info))
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname.lower()}
        name = getattr(record, "jarvis_event", None)
        if name is None:
            out.update(logger=record.name, msg=record.getMessage())
        else:
            out["event"] = name
            out.update(getattr(record, "jarvis_fields", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    """Route our events (and hypercorn's/quart's messages) to stderr in one format."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    log.setLevel(level.upper())
