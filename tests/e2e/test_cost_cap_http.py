"""The spend cap and `--retry-failed` through the real CLI against a sim-server process over
HTTP (issue 10), with `bench/cost_cap.py`'s scenario at a small size; its figures at full
size are in docs/benchmarks.md (section 10).

What is asserted are counts and dollars the run and the server report, never times: the
capped run ends `budget_exhausted`, spends no more than its cap and stops within one call's
estimate of it; resumed with a higher cap it finishes with no request sent twice; and a
`--retry-failed` resume sends exactly one request per task that had failed."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benches import bench_module

pytestmark = pytest.mark.e2e
BENCH = bench_module("cost_cap")


def test_a_capped_run_stops_within_one_call_of_its_cap_and_retry_failed_sends_only_those(
    tmp_path: Path,
) -> None:
    lines = 60
    f = BENCH.run(lines=lines, cap=0.01, concurrency=8, latency=0.005, workdir=tmp_path)
    assert (f["capped_exit"], f["capped_status"]) == (1, "budget_exhausted")
    assert 0 < f["capped_done"] < lines
    assert f["over_usd"] == 0  # never past the cap: every call's estimate is held
    assert 0 <= f["gap_in_estimates"] < 1  # and it stopped only when the next could not fit
    assert (f["resumed_exit"], f["resumed_status"], f["resumed_done"]) == (0, "done", lines)
    assert f["requests_total"] == lines  # a clean server: one request a line, resume included
    assert f["answered_twice"] == 0
    assert f["failed_first"] > 0  # 30 % of single-attempt calls failed
    assert f["retry_requests"] == f["failed_first"]  # exactly the failed ones, once each
    assert f["done_after_retry"] + f["failed_after_retry"] == lines
