"""``Buckets``: a histogram as plain counters, cheap enough for the daemon's hot path.

The daemon counts batch sizes and request latencies here whether or not
metrics are exported: one ``bisect`` and two additions per value, no lock, no
call into a metrics library. A reader in another thread (the Prometheus
exporter) takes :meth:`snapshot`, which copies the counters in one step under
the GIL; a value added meanwhile lands in the next scrape.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

__all__ = ["BATCH_SIZE_BOUNDS", "LATENCY_BOUNDS", "Buckets"]

#: Upper bounds of the request latency buckets, in seconds (arrival to reply).
LATENCY_BOUNDS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
)  # fmt: skip
#: Upper bounds of the group-commit batch size buckets, in requests.
BATCH_SIZE_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Buckets:
    """Counts of values at or below each bound (one more bucket for the rest), and their sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and ascending")
        self.bounds = tuple(bounds)
        #: counts[i]: values v with bounds[i-1] < v <= bounds[i]; the last one: v > bounds[-1].
        self.counts = [0] * (len(self.bounds) + 1)
        self.total: float = 0

    def add(self, value: float) -> None:
        """Count one value."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: Sequence[float]) -> None:
        """Count each of ``values``: :meth:`add` without a call per value."""
        counts, bounds = self.counts, self.bounds
        for value in values:
            counts[bisect_left(bounds, value)] += 1
        self.total += sum(values)

    def snapshot(self) -> tuple[list[int], float]:
        """(per-bucket counts, sum) as of now; ``sum(counts)`` is the number of values."""
        return list(self.counts), self.total
