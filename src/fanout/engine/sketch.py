"""`LatencySketch`: percentiles of a stream of durations in memory that does not grow with it.

A log-bucketed histogram (the DDSketch idea): a duration x > 0 is counted in bucket
ceil(log(x) / log(GAMMA)), so every value in a bucket is within ACCURACY of the bucket's
middle. A million latencies of one run take a few hundred buckets, not 8 MB, and a
percentile is a walk over the buckets, not a sort of every value (the live display asks
for it several times a second). The smallest and largest values are kept exactly and a
percentile is clamped to them, so a run of equal durations reports that duration exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

#: relative accuracy of a percentile (1 %)
ACCURACY = 0.01
GAMMA = (1 + ACCURACY) / (1 - ACCURACY)
#: a value x > 0 is counted in bucket ceil(log(x) / LOG_GAMMA)
LOG_GAMMA = math.log(GAMMA)


class LatencySketch:
    """`append` durations (seconds); `percentile(q)` within `ACCURACY` of the exact one."""

    __slots__ = ("_buckets", "_count", "_max", "_min", "_zeros")

    def __init__(self, values: Iterable[float] = ()) -> None:
        self._buckets: dict[int, int] = {}
        self._zeros = 0  # values <= 0 (a duration the clock could not tell from none)
        self._count = 0
        self._min = math.inf
        self._max = -math.inf
        for v in values:
            self.append(v)

    def append(self, x: float) -> None:
        self._count += 1
        if x < self._min:
            self._min = x
        if x > self._max:
            self._max = x
        if x <= 0.0:
            self._zeros += 1
            return
        i = math.ceil(math.log(x) / LOG_GAMMA)
        b = self._buckets
        b[i] = b.get(i, 0) + 1

    def add_bucket(self, i: int | None, count: int, lo: float, hi: float) -> None:
        """`count` values counted elsewhere in bucket `i` (`bucket(x)`; None: values <= 0),
        the smallest `lo` and the largest `hi`: what `count` appends of them would do."""
        if count <= 0:
            return
        self._count += count
        self._min = min(self._min, lo)
        self._max = max(self._max, hi)
        if i is None:
            self._zeros += count
        else:
            self._buckets[i] = self._buckets.get(i, 0) + count

    def __len__(self) -> int:
        return self._count

    @property
    def buckets(self) -> int:
        """How many buckets the sketch holds (its memory)."""
        return len(self._buckets)

    def percentile(self, q: float) -> float:
        """Nearest rank (q in 0..100), as `metrics.percentile` has it; 0.0 when empty."""
        n = self._count
        if n == 0:
            return 0.0
        rank = max(1, min(n, math.ceil(q / 100.0 * n - 1e-9)))
        seen = self._zeros
        if rank <= seen:
            return max(self._min, 0.0) if self._min <= 0.0 else self._min
        for i in sorted(self._buckets):
            seen += self._buckets[i]
            if seen >= rank:
                middle = 2.0 * GAMMA**i / (GAMMA + 1.0)
                return min(max(middle, self._min), self._max)
        return self._max
