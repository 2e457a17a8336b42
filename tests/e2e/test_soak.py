"""The soak in the suite: 60 seconds of `fanout batch` (1,800 lines paced at 30 a second)
against a sim-server with 429s, 500s, timeouts and three restarts, at a quarter, half and
three quarters of the lines answered (bench/soak.py runs it for 30 minutes). Counts, not
times: every line answered once, nothing answered twice by the server, the restarts all
happened. Select it alone with `-m soak`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benches import bench_module

pytestmark = [pytest.mark.e2e, pytest.mark.soak]


# it was skipped for a while: every line failed with a connection error, under pytest only.
# The restarts were then timed by the clock, and a batch slow to start (the suite's load)
# met a server that was down before its first answer: fanout gives up on a provider that
# never answered after three failed probes. The restarts now follow the answered lines.
@pytest.mark.timeout(900)
def test_a_minute_of_faults_and_restarts_loses_nothing_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    soak = bench_module("soak")
    figures = soak.soak(tmp_path, 60.0, 30.0, 32, say=lambda s: None)
    assert figures["exit_code"] == 0, figures["summary"]
    assert figures["restarts"] == 3
    assert figures["lost"] == 0
    assert figures["output_lines_repeated"] == 0
    assert figures["failed_lines"] == 0
    assert figures["answered_twice_unexplained"] == 0
    faults = figures["faults"]
    assert faults["429"] > 0
    assert faults["500"] > 0
    assert figures["summary"]["done"] == figures["lines"]
