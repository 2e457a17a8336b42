"""Spans: where every task's time went, durable in the store (issue 13's first point).

The main test is the issue's "done when": a run on the simulator with a lane limit, an RPM
limit, 429s and 500s injected and a dependency layer. Each task's spans must be contiguous
(no gap, no overlap) from the moment it was submitted to its result, its breakdown must sum
to that wall time, every provoked category must show, and the `run` spans must be the
`attempts` table's rows, one for one.
"""

from __future__ import annotations

import contextlib
import itertools
import sqlite3
import time
from pathlib import Path

from fanout import Engine, MemoryStore, RetryPolicy, SqliteStore, Task
from fanout.engine.limits import ProviderLimits
from fanout.engine.spans import WaitClock
from fanout.providers.sim import SimConfig, SimProvider
from fanout.report.breakdown import (
    CATEGORIES,
    SpanRow,
    load_spans,
    run_shares,
    task_breakdown,
)
from tests.engine.support import arun

RETRY = RetryPolicy(attempts=12, backoff_base_s=0.02, backoff_cap_s=0.2, budget=10_000)


def _faulty_run(path: Path) -> tuple[str, float, float]:
    sim = SimConfig(
        seed=11,
        base_latency_s=0.02,
        per_token_s=0.0,
        jitter=0.3,
        faults={"429": 0.12, "500": 0.12},
        retry_after_s=0.3,
    )
    first = [
        Task(f"问题 {i}: 解释 idea {i}", key=f"a{i}", lane="slow" if i % 3 == 0 else None)
        for i in range(30)
    ]
    second = [
        Task(f"总结 {j}", key=f"b{j}", depends_on=[f"a{j}", f"a{j + 10}", f"a{j + 20}"])
        for j in range(10)
    ]

    async def main() -> tuple[str, float, float]:
        async with Engine(
            providers={"sim": SimProvider(sim)},
            concurrency=6,
            lanes={"slow": 2},
            limits={"sim": ProviderLimits(rpm=1500)},
            retry=RETRY,
            idle_timeout=10.0,
            store=SqliteStore(path),
            seed=3,
        ) as e:
            before = time.time()
            run = e.submit(first + second)
            m = await run.wait()
            after = time.time()
            assert m["done"] == 40, m
            return run.id, before, after

    return arun(main)


def test_each_task_s_spans_cover_its_life_and_sum_to_its_wall_time(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    run_id, before, after = _faulty_run(path)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rid = db.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        spans = load_spans(db, rid)
        attempts = db.execute(
            "SELECT n, attempt, started_at, duration, outcome, first_token_at FROM attempts "
            "WHERE rid = ? ORDER BY n, attempt",
            (rid,),
        ).fetchall()
        finished = dict(db.execute("SELECT n, finished_at FROM results WHERE rid = ?", (rid,)))
        samples = db.execute(
            "SELECT t, in_flight, limit_now, rpm_used FROM samples WHERE rid = ?", (rid,)
        ).fetchall()
    assert sorted(spans) == list(range(40))
    walls = []
    for n, rows in spans.items():
        # contiguous: each span begins where the one before it ended
        for a, b in itertools.pairwise(rows):
            assert abs(b.t0 - a.t1) < 1e-6, (n, a, b)
        assert all(s.t1 >= s.t0 for s in rows)
        start, end = rows[0].t0, rows[-1].t1
        # from its submission to its result (which is stored after it is recorded)
        assert before <= start <= end <= finished[n] <= after
        b = task_breakdown(rows)
        wall = end - start
        walls.append(wall)
        assert abs(b.wall_s - wall) <= 0.01 * wall, (n, b.seconds, wall)
        assert set(b.seconds) <= set(CATEGORIES)
    shares = run_shares(task_breakdown(r) for r in spans.values())
    assert abs(sum(shares.values()) - 1.0) < 1e-9
    # every category this run provokes shows: dependencies, the lane limit, the RPM limit,
    # the pauses the 429s asked for, backoffs after 429s and 500s, workers all busy, calls
    for c in ("deps", "lane", "rpm", "retry_after", "backoff", "queued", "running"):
        assert shares[c] > 0, (c, shares)
    # only the second layer waits on dependencies, and each of its tasks does
    for n, rows in spans.items():
        assert any(s.kind == "deps" for s in rows) == (n >= 30)
    # one `run` span per attempt, with the attempt's start and duration
    runs = sorted(
        (n, s.attempt, s.t0, s.t1 - s.t0, s.detail)
        for n, rows in spans.items()
        for s in rows
        if s.kind == "run"
    )
    assert len(runs) == len(attempts) > 40  # retries happened
    for (n, attempt, t0, d, detail), row in zip(runs, attempts, strict=True):
        assert (n, attempt) == row[:2]
        assert abs(t0 - row[2]) < 1e-6
        assert abs(d - row[3]) < 1e-6
        assert (detail == "done") == (row[4] == "done")
        if row[4] == "done":  # streamed: the first chunk came inside the attempt
            assert row[2] <= row[5] <= row[2] + row[3]
    assert samples
    assert all(0 <= s[1] <= 6 and 1 <= s[2] <= 6 for s in samples)


def test_a_budget_wait_is_its_own_span() -> None:
    """Tasks parked by the cost cap while other calls settle show `budget` time."""
    store = MemoryStore(spans=True)
    sim = SimConfig(base_latency_s=0.02, jitter=0.0, per_token_s=0.0)
    tasks = [Task(f"idea {i}", key=f"k{i}", max_tokens=200) for i in range(30)]

    async def main() -> str:
        async with Engine(providers=SimProvider(sim), store=store, concurrency=8) as e:
            run = e.submit(tasks, max_cost_usd=0.003)
            await run.wait()
            return run.id

    run_id = arun(main)
    kinds = {s[0] for _, _, s in store.spans(run_id)}
    assert "budget" in kinds, kinds


def test_the_wait_clock_counts_each_cause_and_stops_when_a_timed_wait_is_due() -> None:
    c = WaitClock()
    assert c.reading(0.0) is None  # never held back: nothing to read
    c.block(1.0, "lane", float("inf"))
    c.open(3.0)  # held 2 s for a slot
    c.block(4.0, "rpm", 0.5)  # 0.5 s for the budget, then nobody looked until 10
    c.block(10.0, "rpm", 1.0)  # a new wait of the same kind: the gap is not counted
    assert c.reading(10.5) == {"lane": 2.0, "rpm": 1.0}
    c.open(20.0)
    assert c.reading(30.0) == {"lane": 2.0, "rpm": 1.5}


def test_a_breakdown_sums_its_spans_by_category() -> None:
    rows = [
        SpanRow("deps", 0.0, 1.0),
        SpanRow("queued", 1.0, 1.5),
        SpanRow("run", 1.5, 2.0, 1, "server_error"),
        SpanRow("backoff", 2.0, 2.25),
        SpanRow("run", 2.25, 3.0, 2, "done"),
    ]
    b = task_breakdown(rows)
    assert b.seconds == {"deps": 1.0, "queued": 0.5, "running": 1.25, "backoff": 0.25}
    assert b.wall_s == 3.0
    assert b.attempts == 2
    shares = run_shares([b])
    assert shares["deps"] == 1.0 / 3.0
    assert shares["lane"] == 0.0


def test_a_resumed_run_s_spans_go_on_after_those_of_its_first_segment(tmp_path: Path) -> None:
    """An interrupted attempt keeps its `run` span (detail `interrupted`); the resume's spans
    are numbered after the first segment's, so none is lost to a clash of keys."""
    from tests.store.test_resume import Calls, interrupted_run

    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(10)]

    async def main() -> str:
        run_id, _ = await interrupted_run(path, tasks, ["t7", "t8", "t9"])
        async with Engine(providers=Calls().provider(), store=SqliteStore(path)) as e:
            run = await e.resume(run_id)
            await run.wait()
        return run_id

    run_id = arun(main)
    with contextlib.closing(sqlite3.connect(path)) as db:
        rid = db.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
        rows = db.execute(
            "SELECT n, seq, kind, attempt, detail, t0, t1 FROM spans WHERE rid = ? ORDER BY n, seq",
            (rid,),
        ).fetchall()
        attempts = db.execute(
            "SELECT n, attempt, outcome FROM attempts WHERE rid = ? ORDER BY n, attempt", (rid,)
        ).fetchall()
    runs = [(n, a, d) for n, _, k, a, d, _, _ in rows if k == "run"]
    assert runs == [(n, a, "interrupted" if o == "interrupted" else "done") for n, a, o in attempts]
    for n in (7, 8, 9):  # interrupted, then resumed: two attempts, in order, numbered on
        mine = [r for r in rows if r[0] == n]
        assert [r[3] for r in mine if r[2] == "run"] == [1, 2]
        assert [r[1] for r in mine] == sorted(r[1] for r in mine)
        assert all(b[5] >= a[6] for a, b in itertools.pairwise(mine))
