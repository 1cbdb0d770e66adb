"""Latency figures every benchmark reports the same way (one p99 rule for all)."""

from __future__ import annotations

import statistics


def percentiles(seconds: list[float], digits: int = 2) -> dict[str, float]:
    """p50, p99 and max in milliseconds, and the total in seconds, of some timed calls."""
    ordered = sorted(seconds)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), digits),
        "p99_ms": round(1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], digits),
        "max_ms": round(1000 * ordered[-1], digits),
        "total_s": round(sum(ordered), 2),
    }
