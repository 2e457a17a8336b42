"""The latency sketch: percentiles within 1 % of the exact ones, in memory that does not
grow with the number of durations."""

from __future__ import annotations

import random

import pytest

from fanout.engine.metrics import percentile
from fanout.engine.sketch import ACCURACY, LatencySketch


@pytest.mark.parametrize("q", [1, 25, 50, 90, 95, 99, 100])
def test_percentiles_are_within_the_accuracy_of_the_exact_ones(q: float) -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-2.0, 1.0) for _ in range(20_000)]
    values += [0.0] * 50  # durations the clock could not tell from none
    exact = percentile(values, q)
    got = LatencySketch(values).percentile(q)
    assert abs(got - exact) <= ACCURACY * exact + 1e-12


def test_equal_durations_are_reported_exactly_and_empty_is_zero() -> None:
    assert LatencySketch().percentile(95) == 0.0
    assert LatencySketch([0.05] * 1000).percentile(50) == 0.05


def test_a_million_durations_take_a_few_hundred_buckets() -> None:
    sketch = LatencySketch()
    rng = random.Random(1)
    for _ in range(200_000):
        sketch.append(rng.uniform(0.001, 60.0))
    assert len(sketch) == 200_000
    assert sketch.buckets < 600


def test_buckets_counted_elsewhere_give_the_same_percentiles_as_the_values() -> None:
    # a lean resume counts the done results' buckets in SQL (store/lean.py) and adds them
    import math

    from fanout.engine.sketch import LOG_GAMMA

    rng = random.Random(3)
    values = [rng.lognormvariate(-1.0, 1.5) for _ in range(5_000)] + [0.0] * 7
    groups: dict[int | None, list[float]] = {}
    for v in values:
        groups.setdefault(math.ceil(math.log(v) / LOG_GAMMA) if v > 0 else None, []).append(v)
    counted = LatencySketch()
    for i, vs in groups.items():
        counted.add_bucket(i, len(vs), min(vs), max(vs))
    appended = LatencySketch(values)
    assert len(counted) == len(appended) == 5_007
    for q in (0.1, 1, 50, 95, 99.9, 100):
        assert counted.percentile(q) == appended.percentile(q)
