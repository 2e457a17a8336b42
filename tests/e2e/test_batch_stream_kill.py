"""A 100,000-line batch killed with SIGKILL at 60 % and resumed: every line is answered once,
in input order (or once each in completion order), and no task whose result was committed
before the kill is attempted again (the store's attempts, before and after, say so).
bench/scale.py does the killing and the timing."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from tests.benches import bench_module

pytestmark = pytest.mark.e2e

LINES = 100_000


# the completion order at a smaller size: the two together at 100,000 lines would take
# most of the suite's budget for this work
@pytest.mark.timeout(900)
@pytest.mark.parametrize(("order", "lines"), [("input", LINES), ("completion", 30_000)])
def test_sigkill_at_60_percent_and_resume_answers_every_line_once(
    tmp_path: Path, order: str, lines: int
) -> None:
    scale = bench_module("scale")
    src = tmp_path / "输入.jsonl"
    scale.make_input(src, lines)
    figures = scale.kill_and_resume(src, tmp_path, lines, 256, 0.6, order)
    assert figures["killed_at"] >= 0.6 * lines
    assert figures["killed_at"] < lines, "the run ended before the kill"
    assert figures["all_answered_once"], figures
    assert figures["committed_attempted_again"] == 0, figures
    db = tmp_path / f"home-kill-{lines}-{order}" / "fanout.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        (rid,) = con.execute("SELECT rid FROM runs").fetchone()
        states = dict(
            con.execute("SELECT state, count(*) FROM results WHERE rid = ? GROUP BY state", (rid,))
        )
    assert states == {"done": lines}
