"""kill -9 at random moments, resume each time: every task ends with one result and nothing
that was committed is ever sent again (the checks are bench/crash.py's; it does 50 kills)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benches import bench_module

pytestmark = pytest.mark.e2e


# about 40 s on an idle machine, past two minutes on a loaded one: the suite's default
# timeout would cut a correct run short
@pytest.mark.timeout(600)
def test_ten_kills_and_resumes_lose_nothing_and_repeat_no_committed_call(tmp_path: Path) -> None:
    crash = bench_module("crash")
    campaign, figures = crash.campaign(tmp_path, tasks=2000, kills=10, concurrency=16, seed=4)
    assert campaign.kills == 10
    assert figures["committed_answered_again"] == 0
    assert figures["integrity"] == "ok"
    # every answer beyond one a task is one a kill lost (answered, not yet committed); how
    # many a kill loses is the load's: the commits lag the answers on a loaded machine
    assert figures["completions"] == 2000 + figures["answers_lost"]
