"""Log lines and settings."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jarvis_trio import logs
from jarvis_trio._config_docs import table_in
from jarvis_trio.config import Settings, is_loopback, settings_table

CONFIG_PAGE = Path(__file__).parents[2] / "docs" / "reference" / "configuration.md"


def record(name: str, **fields: object) -> logging.LogRecord:
    rec = logging.LogRecord("jarvis_trio", logging.INFO, __file__, 1, name, None, None)
    rec.jarvis_event = name
    rec.jarvis_fields = fields
    return rec


def test_logfmt_line_starts_with_the_bare_event_name() -> None:
    line = logs.LogfmtFormatter().format(
        record("stream_end", trace="chatcmpl-1", session="s 1", duration_ms=1.234, note='a"b')
    )
    assert line.startswith("ts=")
    assert ' level=info stream_end trace=chatcmpl-1 session="s 1" duration_ms=1.2' in line
    assert 'note="a\\"b"' in line


def test_json_line() -> None:
    line = logs.JsonFormatter().format(record("stream_start", trace="t", session="s"))
    assert json.loads(line) | {"ts": "x"} == {
        "ts": "x",
        "level": "info",
        "event": "stream_start",
        "trace": "t",
        "session": "s",
    }


def test_none_fields_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    logs.event("stream_start", trace="t", session=None)
    assert caplog.records[-1].__dict__["jarvis_fields"] == {"trace": "t"}


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JARVIS_API_KEYS", " a, b ,,c")
    monkeypatch.setenv("JARVIS_PREV_STREAM_TIMEOUT", "0.5")
    monkeypatch.setenv("JARVIS_LOG_FORMAT", "JSON")
    settings = Settings()
    assert settings.api_keys == ("a", "b", "c")
    assert settings.join_budget == 0.5  # the old name of JARVIS_JOIN_BUDGET still counts
    assert settings.log_format == "json"
    monkeypatch.setenv("JARVIS_JOIN_BUDGET", "0.25")
    assert Settings().join_budget == 0.25  # the new name wins
    assert Settings(prev_stream_timeout=0.75).join_budget == 0.75  # the old keyword too


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "10.0.0.1", "::", "example.org"]))


def test_the_docs_configuration_table_is_generated_from_the_code() -> None:
    """`make config-docs` wrote it; the docs build checks the same."""
    assert table_in(CONFIG_PAGE.read_text(encoding="utf-8")) == settings_table()
