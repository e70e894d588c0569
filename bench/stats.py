"""Latency recording with bounded memory, and percentiles."""

from __future__ import annotations

import random
from array import array
from collections.abc import Iterable


class Recorder:
    """Keeps every sample up to ``cap``, then a uniform reservoir of ``cap`` samples."""

    def __init__(self, cap: int = 2_000_000) -> None:
        self.cap = cap
        self.count = 0
        self.samples = array("d")
        self._rng = random.Random(1)

    def add(self, value: float) -> None:
        self.count += 1
        if len(self.samples) < self.cap:
            self.samples.append(value)
            return
        slot = self._rng.randrange(self.count)
        if slot < self.cap:
            self.samples[slot] = value

    def extend(self, values: Iterable[float]) -> None:
        for value in values:
            self.add(value)

    def merge(self, other: Recorder) -> None:
        self.extend(other.samples)
        # samples beyond the other's cap were already thinned; keep the true count
        self.count += other.count - len(other.samples)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile, ``q`` in [0, 100]; None without samples."""
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        rank = max(0, min(len(ordered) - 1, round(q / 100.0 * len(ordered) + 0.5) - 1))
        return ordered[rank]

    def p50_p99_ms(self) -> tuple[float | None, float | None]:
        p50, p99 = self.percentile(50), self.percentile(99)
        return (None if p50 is None else p50 * 1000.0, None if p99 is None else p99 * 1000.0)
