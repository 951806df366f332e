"""Buckets: the daemon's hot-path histogram (batch sizes, request latencies)."""

from __future__ import annotations

import pytest

from fastquartdb.engine.histogram import LATENCY_BOUNDS, Buckets


def test_add_many_counts_as_add_does_one_by_one() -> None:
    # Values on, between and beyond the bounds (a bound belongs to its own bucket).
    values = [0.0, 0.0001, 0.00011, 0.003, 0.0025, 9.9, 10.0, 10.5, 0.5, 0.5]
    one_by_one, at_once = Buckets(LATENCY_BOUNDS), Buckets(LATENCY_BOUNDS)
    for value in values:
        one_by_one.add(value)
    at_once.add_many(values)
    at_once.add_many([])
    (counts, total), (expected, expected_total) = at_once.snapshot(), one_by_one.snapshot()
    assert counts == expected
    assert sum(counts) == len(values) and counts[0] == 2 and counts[-1] == 1
    # sum() may add more exactly than one += at a time (Python 3.12 compensates).
    assert total == pytest.approx(expected_total)
