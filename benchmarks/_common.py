"""Shared helpers for the benchmarks: order-robust statistics and one-line JSON reports."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from typing import Any


def median(values: Sequence[float]) -> float:
    """The median of ``values``."""
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linear interpolation between ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def rnd(value: float, digits: int = 3) -> float:
    """``value`` rounded for the report."""
    return round(float(value), digits)


def rotated(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` rotated left by ``shift``: round-robin order that changes every iteration,
    so no contender always runs first (cold caches) or last (after the others' garbage)."""
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def machine() -> dict[str, Any]:
    """Where the figures were taken (kept short: they are ratios, not absolute numbers)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": sys.platform}


def emit(report: dict[str, Any]) -> None:
    """Print the report as ONE JSON line on stdout."""
    print(json.dumps(report, separators=(",", ":")), flush=True)
