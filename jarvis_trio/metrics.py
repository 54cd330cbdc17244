"""Prometheus metrics (``GET /metrics``): cancellation made visible.

One registry per app (tests run several apps in one process). Counters and
histograms are fed by the session manager through its
:class:`~jarvis_trio.sessions.Observer` interface; gauges are read at scrape
time from the manager and the thread limiter, so they can never drift.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from jarvis_trio.outcomes import Outcome
from jarvis_trio.sessions import ManagerStatistics
from jarvis_trio.tools.outcomes import TOOL_OUTCOMES

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0)
_SLOW = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Gauges(Collector):
    def __init__(
        self,
        stats: Callable[[], ManagerStatistics],
        limiter: trio.CapacityLimiter,
        upstream_idle: Callable[[], int],
    ) -> None:
        self._stats = stats
        self._limiter = limiter
        self._upstream_idle = upstream_idle

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats()
        yield GaugeMetricFamily("jarvis_live_streams", "Streams emitting now.", stats.live_streams)
        yield GaugeMetricFamily(
            "jarvis_streams_running",
            "Streams holding a slot: live, being cancelled, or past their join.",
            stats.running_streams,
        )
        yield GaugeMetricFamily(
            "jarvis_streams_limit",
            "Most streams that may hold a slot (JARVIS_MAX_STREAMS); past it, 429.",
            stats.max_streams,
        )
        yield GaugeMetricFamily(
            "jarvis_streams_waiting",
            "Requests waiting for their session's previous stream to end.",
            stats.waiting_streams,
        )
        refused = CounterMetricFamily(
            "jarvis_streams_refused",
            "Requests refused before their session was touched, by reason "
            "(full: 429, shutting_down: 503).",
            labels=["reason"],
        )
        for reason, count in stats.refused.items():
            refused.add_metric([reason], count)
        yield refused
        yield GaugeMetricFamily(
            "jarvis_sessions", "Sessions with anything running.", stats.sessions
        )
        yield GaugeMetricFamily(
            "jarvis_worker_threads_in_use",
            "Worker threads reading upstreams now.",
            self._limiter.borrowed_tokens,
        )
        yield GaugeMetricFamily(
            "jarvis_worker_threads_waiting",
            "Streams waiting for a worker thread (0 unless zombies hold threads).",
            self._limiter.statistics().tasks_waiting,
        )
        yield GaugeMetricFamily(
            "jarvis_worker_threads_limit",
            "Most worker threads that may read upstreams at once.",
            self._limiter.total_tokens,
        )
        yield GaugeMetricFamily(
            "jarvis_upstream_idle_connections",
            "Upstream connections kept alive for a next request (JARVIS_UPSTREAM_KEEPALIVE).",
            self._upstream_idle(),
        )


class Metrics:
    """Implements the manager's ``Observer``; renders the exposition text."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.started = Counter("jarvis_streams_started", "Streams started.", registry=r)
        self.ended = Counter(
            "jarvis_streams_ended", "Streams ended, by outcome.", ["outcome"], registry=r
        )
        for outcome in Outcome:
            self.ended.labels(outcome.value)
        self.joins = Counter(
            "jarvis_joins",
            "Joins of cancelled streams: finished within the budget (clean) or not (timeout).",
            ["result"],
            registry=r,
        )
        for result in ("clean", "timeout"):
            self.joins.labels(result)
        self.join_seconds = Histogram(
            "jarvis_join_duration_seconds",
            "From a stream's cancel until its task ended (or the budget ran out).",
            buckets=_FAST,
            registry=r,
        )
        self.cancel_closed = Histogram(
            "jarvis_cancel_to_upstream_closed_seconds",
            "From a stream's cancel until its backend returned, its upstream closed.",
            buckets=_FAST,
            registry=r,
        )
        self.ttft = Histogram(
            "jarvis_time_to_first_token_seconds",
            "From a stream's start to its first token.",
            buckets=_SLOW,
            registry=r,
        )
        self.requests = Counter(
            "jarvis_http_requests", "HTTP responses, by status.", ["status"], registry=r
        )
        self.tool_calls = Counter(
            "jarvis_tool_calls",
            "MCP tool calls, by outcome (`abandoned`: its cancel could not be delivered "
            "within the cancel budget).",
            ["outcome"],
            registry=r,
        )
        for outcome_name in TOOL_OUTCOMES:
            self.tool_calls.labels(outcome_name)
        self.tool_seconds = Histogram(
            "jarvis_tool_call_duration_seconds",
            "From a tool call's start until it returned to its caller (cancelled ones too).",
            buckets=_SLOW,
            registry=r,
        )

    def watch(
        self,
        stats: Callable[[], ManagerStatistics],
        limiter: trio.CapacityLimiter,
        upstream_idle: Callable[[], int],
    ) -> None:
        """Gauges read at scrape time: the manager's ``stats``, the reader threads'
        ``limiter``, and the count of kept-alive upstream connections."""
        self.registry.register(_Gauges(stats, limiter, upstream_idle))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # -- Observer

    def stream_started(self) -> None:
        self.started.inc()

    def stream_ended(self, outcome: Outcome, seconds: float) -> None:
        self.ended.labels(outcome.value).inc()

    def join_finished(self, clean: bool, seconds: float) -> None:
        self.joins.labels("clean" if clean else "timeout").inc()
        self.join_seconds.observe(seconds)

    def cancel_to_closed(self, seconds: float) -> None:
        self.cancel_closed.observe(seconds)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def stream_refused(self, reason: str) -> None:
        pass  # counted by the manager, read at scrape time (jarvis_streams_refused_total)

    # -- the tool host's observer

    def tool_call_ended(self, outcome: str, seconds: float) -> None:
        self.tool_calls.labels(outcome).inc()
        self.tool_seconds.observe(seconds)
