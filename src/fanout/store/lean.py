"""A lean read of a stored run for resuming it: the tasks still to run in full, the done
ones as counts and a stream of (lane, agent, latency, tokens) for the run's figures.

A run killed at 60 % of a million lines holds 600,000 results: `load_snapshot` builds every
one of them (and every task and attempt) as Python objects; this counts them in SQL, down
to the latency sketch's buckets (`DoneGroup`), so memory stays flat and the time is that of
a few scans of the run's rows in SQLite, with no Python per row."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Collection

from fanout.store.base import DoneGroup, OpenRun, StoredTask
from fanout.store.queries import RESULT_COLS, run_row, snapshot_of, stored_result

#: the newest done tasks loaded in full: their requests are built again on resume and
#: compared with what they sent (the settings check of a lean resume)
SAMPLE = 16


def load_open_run(
    db: sqlite3.Connection, run_id: str, keep: Collection[str], bucket_log: float
) -> OpenRun | None:
    row = run_row(db, run_id)
    if row is None:
        return None
    rid = row[0]
    from fanout.store.spec import spec_key

    keep_json = json.dumps(sorted(keep), ensure_ascii=False)
    sample = [
        n
        for (n,) in db.execute(
            "SELECT n FROM results WHERE rid = ? AND state = 'done' AND cache_key IS NOT NULL "
            "ORDER BY n DESC LIMIT ?",
            (rid, SAMPLE),
        )
    ]
    # live: no result, a result that is not done (it may run again), kept, or sampled
    tasks = [
        StoredTask(n, key if key is not None else spec_key(spec), lane, agent, spec)
        for n, key, lane, agent, spec in db.execute(
            "SELECT t.n, t.key, t.lane, t.agent, t.spec FROM tasks t LEFT JOIN results r "
            "ON r.rid = t.rid AND r.n = t.n WHERE t.rid = ? AND (r.state IS NULL "
            "OR r.state != 'done' OR t.key IN (SELECT value FROM json_each(?)) "
            "OR t.n IN (SELECT value FROM json_each(?))) ORDER BY t.n",
            (rid, keep_json, json.dumps(sample)),
        )
    ]
    live = json.dumps([t.n for t in tasks])
    results = {
        r.n: r
        for r in map(
            stored_result,
            db.execute(
                f"SELECT {RESULT_COLS} FROM results WHERE rid = ? "
                "AND n IN (SELECT value FROM json_each(?)) ORDER BY n",
                (rid, live),
            ),
        )
    }
    attempts = db.execute(
        "SELECT n, attempt, outcome, error_kind, duration FROM attempts WHERE rid = ? "
        "AND n IN (SELECT value FROM json_each(?)) ORDER BY n, attempt",
        (rid, live),
    ).fetchall()
    totals = [
        (outcome, kind, int(count), int(ns or 0))
        for outcome, kind, count, ns in db.execute(
            "SELECT outcome, error_kind, count(*), "
            "sum(CAST(coalesce(duration, 0.0) * 1e9 + 0.5 AS INTEGER)) "
            "FROM attempts WHERE rid = ? GROUP BY outcome, error_kind",
            (rid,),
        )
    ]
    retries = sum(
        c for outcome, kind, c, _ in totals if outcome == "error" and kind != "connection"
    )
    lanes = dict(db.execute("SELECT lane, count(*) FROM tasks WHERE rid = ? GROUP BY lane", (rid,)))
    stored = sum(lanes.values())
    done = done_groups(db, rid, live, bucket_log)
    snap = snapshot_of(db, run_id, row, tasks, results, attempts)
    return OpenRun(snap, int(stored), lanes, totals, retries, done)


def done_groups(
    db: sqlite3.Connection, rid: int, live_json: str, bucket_log: float
) -> list[DoneGroup]:
    """The run's done results but those numbered in `live_json`, grouped (`DoneGroup`): one
    pass in SQLite, whatever their number."""
    _math_functions(db)
    return [
        DoneGroup(lane, agent, model, bool(called), bucket, count, tin, tout, lo, hi)
        for lane, agent, model, called, bucket, count, tin, tout, lo, hi in db.execute(
            "SELECT t.lane, t.agent, r.model, r.attempts > 0, CASE WHEN r.attempts > 0 "
            "AND r.latency > 0 THEN CAST(ceil(ln(r.latency) / ?) AS INTEGER) END, count(*), "
            "sum(r.input_tokens), sum(r.output_tokens), min(r.latency), max(r.latency) "
            "FROM results r JOIN tasks t ON t.rid = r.rid AND t.n = r.n WHERE r.rid = ? "
            "AND r.state = 'done' AND r.n NOT IN (SELECT value FROM json_each(?)) "
            "GROUP BY 1, 2, 3, 4, 5",
            (bucket_log, rid, live_json),
        )
    ]


def _math_functions(db: sqlite3.Connection) -> None:
    """`ln` and `ceil` in SQL: built into most SQLite builds (3.35+ with math functions);
    Python's own where they are not, the same C library functions either way."""
    try:
        db.execute("SELECT ln(2.0), ceil(0.5)").fetchone()
    except sqlite3.OperationalError:
        db.create_function("ln", 1, math.log, deterministic=True)
        db.create_function("ceil", 1, math.ceil, deterministic=True)
