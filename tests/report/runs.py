"""Runs for the timeline tests: a real run on the simulator into a SQLite store, and a
big store written row by row (100,000 tasks), with the `spans` and `samples` tables of the
interface the store shares with the pictures."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from pathlib import Path

from fanout import Engine, RetryPolicy, SimConfig, SimProvider, SqliteStore, Task
from fanout.store.sqlite import connect

#: the spans interface, exactly as agreed (the store creates these once its migration lands)
SPANS_DDL = (
    "CREATE TABLE IF NOT EXISTS spans (rid INTEGER NOT NULL, n INTEGER NOT NULL, "
    "seq INTEGER NOT NULL, kind TEXT NOT NULL, t0 REAL NOT NULL, t1 REAL NOT NULL, "
    "attempt INTEGER, detail TEXT, PRIMARY KEY (rid, n, seq)) WITHOUT ROWID"
)
SAMPLES_DDL = (
    "CREATE TABLE IF NOT EXISTS samples (rid INTEGER NOT NULL, t REAL NOT NULL, "
    "in_flight INTEGER, limit_now INTEGER, rpm_used REAL, tpm_used REAL, "
    "PRIMARY KEY (rid, t)) WITHOUT ROWID"
)

LANES = {"慢车道": 2, "fast": 4}


def real_run(path: Path, *, tasks: int = 24, concurrency: int = 5) -> str:
    """A run with two lanes (one named in Chinese), 429s and 500s injected (so retries),
    and a dependency layer: `tasks` parts, then two merges that depend on halves of them."""
    sim = SimConfig(
        base_latency_s=0.01,
        jitter=0.3,
        per_token_s=0.0,
        faults={"429": 0.15, "500": 0.1},
        retry_after_s=0.01,
        seed=7,
    )
    parts = [
        Task(
            f"总结第{i}章",
            key=f"第{i}章",
            lane="慢车道" if i % 3 == 0 else "fast",
            agent="摘要" if i % 2 else "outline",
        )
        for i in range(tasks)
    ]
    merges = [
        Task("合并前半", key="合并-1", depends_on=parts[: tasks // 2], on_dependency_failure="run"),
        Task("合并后半", key="合并-2", depends_on=parts[tasks // 2 :], on_dependency_failure="run"),
    ]

    async def go() -> str:
        async with Engine(
            providers=SimProvider(sim),
            store=SqliteStore(path),
            concurrency=concurrency,
            lanes=LANES,
            retry=RetryPolicy(attempts=6, backoff_base_s=0.005, backoff_cap_s=0.02, budget=100),
        ) as engine:
            run = engine.submit([*parts, *merges])
            await run.wait()
            return run.id

    return asyncio.run(go())


def add_spans(db: sqlite3.Connection, run_id: str) -> dict[str, int]:
    """Spans and samples derived from the run's attempts, as the engine will write them:
    per task `queued` from the run's start to its first attempt, `backoff` between attempts,
    `run` for each attempt; a sample every 10 ms. Returns the count of each wait kind."""
    db.execute(SPANS_DDL)
    db.execute(SAMPLES_DDL)
    rid = db.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    # the engine's own spans and samples, when it records them, give way to these known ones
    db.execute("DELETE FROM spans WHERE rid = ?", (rid,))
    db.execute("DELETE FROM samples WHERE rid = ?", (rid,))
    rows = db.execute(
        "SELECT n, attempt, started_at, duration, outcome, error_class FROM attempts "
        "WHERE rid = ? ORDER BY n, attempt",
        (rid,),
    ).fetchall()
    start = min(r[2] for r in rows)
    end = max(r[2] + r[3] for r in rows)
    counts: dict[str, int] = {}
    seq: dict[int, int] = {}
    prev_end: dict[int, float] = {}
    spans = []
    for n, attempt, t0, dur, outcome, error_class in rows:
        kind = "queued" if n not in prev_end else "backoff"
        begin = prev_end.get(n, start)
        if t0 > begin:
            spans.append((rid, n, seq.setdefault(n, 0), kind, begin, t0, None, None))
            seq[n] += 1
            counts[kind] = counts.get(kind, 0) + 1
        spans.append(
            (rid, n, seq.setdefault(n, 0), "run", t0, t0 + dur, attempt, error_class or outcome)
        )
        seq[n] += 1
        prev_end[n] = t0 + dur
    db.executemany("INSERT INTO spans VALUES (?,?,?,?,?,?,?,?)", spans)
    samples = []
    t = start
    while t <= end:
        flying = sum(1 for r in rows if r[2] <= t < r[2] + r[3])
        samples.append((rid, t, flying, 5, 600.0 + flying, 9000.0))
        t += 0.01
    db.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?)", samples)
    return counts


def big_store(path: Path, tasks: int = 100_000, slots: int = 64) -> str:
    """A store holding one run of `tasks` tasks over `slots` workers, written directly: the
    rows an engine would leave, made in a second (running 100,000 calls takes minutes on a
    loaded machine, and what is tested here is the drawing, not the engine)."""
    from fanout.store.migrations import migrate

    rnd = random.Random(1)
    db = connect(path)
    migrate(db)
    db.execute(SPANS_DDL)
    db.execute(SAMPLES_DDL)
    db.execute("BEGIN")
    db.execute(
        "INSERT INTO runs (rid, id, kind, status, created_at, ended_at, config, settings, total) "
        "VALUES (1, 'r-big', 'batch', 'done', 1000.0, NULL, '{}', '{}', ?)",
        (tasks,),
    )
    free = [1000.0] * slots
    task_rows, attempt_rows, span_rows = [], [], []
    for n in range(tasks):
        lane = ("批处理", "fast", "slow")[n % 3]
        task_rows.append((1, n, f"文档-{n:06d}", lane, f"agent-{n % 5}", None))
        tries = 2 if rnd.random() < 0.05 else 1
        prev_end = 0.0
        for a in range(1, tries + 1):
            w = min(range(slots), key=free.__getitem__)
            t0 = max(free[w], prev_end + 0.01) + rnd.random() * 0.002
            d = 0.05 + rnd.random() * 0.1
            free[w] = prev_end = t0 + d
            ok = a == tries
            attempt_rows.append(
                (1, n, a, t0, d, "done" if ok else "error", None if ok else "rate_limited", 300)
            )
            span_rows.append((1, n, 2 * a, "run", t0, t0 + d, a, "done"))
            span_rows.append(
                (1, n, 2 * a - 1, "queued" if a == 1 else "rpm", t0 - 0.01, t0, None, None)
            )
    db.executemany("INSERT INTO tasks VALUES (?,?,?,?,?,?)", task_rows)
    db.executemany(
        "INSERT INTO attempts (rid, n, attempt, started_at, duration, outcome, error_class, "
        "tokens) VALUES (?,?,?,?,?,?,?,?)",
        attempt_rows,
    )
    db.executemany("INSERT INTO spans VALUES (?,?,?,?,?,?,?,?)", span_rows)
    end = max(free)
    db.executemany(
        "INSERT INTO samples VALUES (1, ?, ?, ?, ?, ?)",
        [(1000.0 + i, slots, slots, 1200.0, 80000.0) for i in range(int(end - 1000.0))],
    )
    db.execute("COMMIT")
    db.close()
    return "r-big"
