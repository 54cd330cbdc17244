"""MkDocs hooks: the reference pages are generated from, or checked against, the code.

- ``<!-- generated: settings-table -->`` becomes :func:`jarvis_trio.config.settings_table`
  (the same table as README's, from the pydantic-settings fields).
- ``<!-- generated: metrics-table -->`` becomes a table read from a live
  :class:`jarvis_trio.metrics.Metrics` registry: names, types, labels and their
  values, buckets and help texts as the server exports them.
- ``<!-- checked: log-events -->`` fails the build unless the page names every
  event that ``jarvis_trio`` logs (found in the source with :mod:`ast`) and names
  no event the code does not log.
- ``<!-- checked: routes -->`` fails the build unless the page names every route of
  the app (read from its URL map).

A marker that is missing from its page fails the build too, so a page cannot
silently lose its generated part.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.exceptions import PluginError

PACKAGE = Path(__file__).resolve().parent.parent / "jarvis_trio"

SETTINGS_MARKER = "<!-- generated: settings-table -->"
METRICS_MARKER = "<!-- generated: metrics-table -->"
EVENTS_MARKER = "<!-- checked: log-events -->"
ROUTES_MARKER = "<!-- checked: routes -->"

# Which page carries which marker.
PAGES = {
    "reference/configuration.md": [SETTINGS_MARKER],
    "reference/metrics.md": [METRICS_MARKER],
    "reference/logs.md": [EVENTS_MARKER],
    "reference/api.md": [ROUTES_MARKER],
}


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    path = page.file.src_uri
    for marker in PAGES.get(path, []):
        if marker not in markdown:
            raise PluginError(f"{path}: marker {marker} is missing")
    if SETTINGS_MARKER in markdown:
        from jarvis_trio.config import settings_table

        markdown = markdown.replace(SETTINGS_MARKER, settings_table())
    if METRICS_MARKER in markdown:
        markdown = markdown.replace(METRICS_MARKER, metrics_table())
    if EVENTS_MARKER in markdown:
        check_log_events(path, markdown)
        markdown = markdown.replace(EVENTS_MARKER, "")
    if ROUTES_MARKER in markdown:
        check_routes(path, markdown)
        markdown = markdown.replace(ROUTES_MARKER, "")
    return markdown


def metrics_table() -> str:
    import trio
    from prometheus_client.metrics import MetricWrapperBase

    from jarvis_trio.metrics import Metrics
    from jarvis_trio.sessions import ManagerStatistics

    metrics = Metrics()
    metrics.watch(lambda: ManagerStatistics(0, 0, 0, 0, 0, 0), trio.CapacityLimiter(1))
    label_names = {
        wrapper._name: wrapper._labelnames
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    rows = ["| Metric | Type | Labels | Meaning (the exported help text) |", "|---|---|---|---|"]
    for family in metrics.registry.collect():
        shown = f"{family.name}_total" if family.type == "counter" else family.name
        labels = []
        for label in label_names.get(family.name, ()):
            values = sorted({s.labels[label] for s in family.samples if label in s.labels})
            listed = ", ".join(f"`{v}`" for v in values) if values else "one per value seen"
            labels.append(f"`{label}`: {listed}")
        if family.type == "histogram":
            buckets = [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")]
            labels.append("buckets (s): " + ", ".join(b for b in buckets if b != "+Inf"))
        rows.append(
            f"| `{shown}` | {family.type} | {'; '.join(labels) or '-'} | {family.documentation} |"
        )
    return "\n".join(rows)


def logged_events() -> set[str]:
    """Every event name ``jarvis_trio`` logs: ``logs.event("name", ...)`` calls, and the
    first word of ``log.exception("name ...")`` messages."""
    names: set[str] = set()
    for source in PACKAGE.rglob("*.py"):
        if source.name == "ollama_sim.py":  # the simulator's own log, not the server's
            continue
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in ("event", "exception") or not node.args:
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                word = first.value.split(" ")[0]
                if re.fullmatch(r"[a-z_]+", word):
                    names.add(word)
    return names


def check_log_events(path: str, markdown: str) -> None:
    code = logged_events()
    if not code:
        raise PluginError("found no logged events in jarvis_trio: the scan is broken")
    documented = set(re.findall(r"^\| `([a-z_]+)`", markdown, re.M))
    if missing := sorted(code - documented):
        raise PluginError(f"{path}: events logged by the code but not documented: {missing}")
    if extra := sorted(documented - code):
        raise PluginError(f"{path}: documented events the code never logs: {extra}")


def check_routes(path: str, markdown: str) -> None:
    from jarvis_trio.app import create_app
    from jarvis_trio.config import Settings

    app = create_app(Settings(backend="sim"))
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        shown = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if f"`{method} {shown}`" not in markdown:
                missing.append(f"{method} {shown}")
    if missing:
        raise PluginError(f"{path}: routes of the app that are not documented: {missing}")
