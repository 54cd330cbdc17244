"""Pure statistics of the benchmarks: percentiles, summaries, ratios, CDF points."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank on sorted ``values`` (``q`` in 0..1): p99 of 200 values is the
    198th smallest, p99 of fewer than 100 is their maximum or next to it."""
    if not values:
        raise ValueError("no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be within 0..1")
    got = sorted(values)
    return got[min(len(got) - 1, round(q * (len(got) - 1)))]


@dataclass(frozen=True)
class Summary:
    """p50 / p99 / max of what happened; ``missing`` counts what never did."""

    count: int
    missing: int
    p50: float | None
    p99: float | None
    max: float | None

    @property
    def total(self) -> int:
        return self.count + self.missing


def summarize(values: Sequence[float | None]) -> Summary:
    """``None`` is an event that never happened (within its timeout)."""
    got = sorted(v for v in values if v is not None)
    missing = len(values) - len(got)
    if not got:
        return Summary(0, missing, None, None, None)
    return Summary(len(got), missing, statistics.median(got), percentile(got, 0.99), got[-1])


def percentile_counting_missing(values: Sequence[float | None], q: float) -> float | None:
    """The ``q`` percentile with every missing value counted as later than all others:
    None when that rank falls on a value that never came (a target is then missed)."""
    if not values:
        return None
    ranked = sorted(values, key=lambda v: (v is None, v or 0.0))
    return ranked[min(len(ranked) - 1, round(q * (len(ranked) - 1)))]


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either is unknown or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def cdf_points(values: Sequence[float | None]) -> tuple[list[float], list[float]]:
    """Sorted values and the fraction of *all* values (missing ones included) at or
    below each: a curve that never reaches 1 shows what never happened."""
    got = sorted(v for v in values if v is not None)
    n = len(values)
    return got, [(i + 1) / n for i in range(len(got))]
