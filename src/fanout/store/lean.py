"""A lean read of a stored run for resuming it: the tasks still to run in full, the done
ones as counts and a stream of (lane, agent, latency, tokens) for the run's figures.

A run killed at 60 % of a million lines holds 600,000 results: `load_snapshot` builds every
one of them (and every task and attempt) as Python objects; this counts them in SQL, so
memory stays flat and the time is that of a few plain scans of the run's rows in SQLite,
with no Python per row and, in the usual case, no sort of them either:

- one pass over the tasks counts them and says whether they all have the first one's lane
  and agent (a batch's usual case);
- one pass over the results counts them, lists those not done, and sums the done ones'
  counts and tokens; the tasks without a result are found from the top of the run down,
  where they are (a probe each until as many as are missing have been found);
- the latency sketch's buckets of the done results come from SQL as well: exactly (a sort
  by bucket) when there are at most `LATENCY_SAMPLE` of them, otherwise from an even
  sample of that many across the run, scaled to the exact count. The resumed run's latency
  percentiles are then estimates of the earlier segments' (they are already within the
  sketch's 1 %); the counts, tokens, smallest and largest latency stay exact.

A run whose tasks have several lanes or agents, or whose called results several models,
is read the older way: its done results grouped by lane, agent, model and bucket in one
sorted pass (exact, seconds at a million rows)."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Collection, Iterable
from typing import Any

from fanout.store.base import DoneGroup, OpenRun, StoredResult, StoredTask
from fanout.store.queries import RESULT_COLS, run_row, snapshot_of, stored_result
from fanout.tasks import TaskState

#: the newest done tasks loaded in full: their requests are built again on resume and
#: compared with what they sent (the settings check of a lean resume)
SAMPLE = 16
#: done results whose latency buckets are counted exactly; above, an even sample this big
LATENCY_SAMPLE = 20_000

_BUCKET = "CAST(ceil(ln(latency) / ?) AS INTEGER)"


def load_open_run(
    db: sqlite3.Connection,
    run_id: str,
    keep: Collection[str],
    bucket_log: float,
    latency_sample: int = LATENCY_SAMPLE,
) -> OpenRun | None:
    row = run_row(db, run_id)
    if row is None:
        return None
    rid = row[0]
    from fanout.store.spec import spec_key

    newest = [
        n
        for (n,) in db.execute(
            "SELECT n FROM results WHERE rid = ? AND state = 'done' AND cache_key IS NOT NULL "
            "ORDER BY n DESC LIMIT ?",
            (rid, SAMPLE),
        )
    ]
    shape = _task_shape(db, rid, keep)
    stored = shape.stored
    scan = _results_pass(db, rid)
    missing = stored - scan.results
    # tasks without a result: the newest ones, as a rule (in flight when the run stopped)
    unanswered = (
        [
            n
            for (n,) in db.execute(
                "SELECT t.n FROM tasks t WHERE t.rid = ? AND NOT EXISTS (SELECT 1 FROM "
                "results r WHERE r.rid = t.rid AND r.n = t.n) ORDER BY t.n DESC LIMIT ?",
                (rid, missing),
            )
        ]
        if missing > 0
        else []
    )
    live = json.dumps(sorted({*unanswered, *scan.open, *shape.kept, *newest}))
    tasks = [
        StoredTask(n, key if key is not None else spec_key(spec), lane, agent, spec)
        for n, key, lane, agent, spec in db.execute(
            "SELECT n, key, lane, agent, spec FROM tasks WHERE rid = ? "
            "AND n IN (SELECT value FROM json_each(?)) ORDER BY n",
            (rid, live),
        )
    ]
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
    totals = attempt_totals(db, rid)
    retries = sum(
        c for outcome, kind, c, _ in totals if outcome == "error" and kind != "connection"
    )
    done = None
    if shape.one_lane_and_agent:
        scan.leave_out(r for r in results.values() if r.state is TaskState.DONE)
        done = scan.groups(db, rid, live, bucket_log, shape, latency_sample)
    if done is None:
        done = done_groups(db, rid, live, bucket_log)
    snap = snapshot_of(db, run_id, row, tasks, results, attempts)
    return OpenRun(snap, stored, shape.lanes, totals, retries, done)


class _Shape:
    """What one pass over a run's tasks tells (`_task_shape`)."""

    def __init__(self, stored: int, lanes: dict[str | None, int]) -> None:
        self.stored = stored
        self.lanes = lanes
        self.one_lane_and_agent = False  # all tasks have `lane` and `agent`
        self.lane: str | None = None
        self.agent: str | None = None
        self.kept: list[int] = []


def _task_shape(db: sqlite3.Connection, rid: int, keep: Collection[str]) -> _Shape:
    """The run's tasks counted, by lane, whether they all have the lane and agent of the
    first one, and the numbers of those whose keys are in `keep`: one plain pass, no sort."""
    first = db.execute(
        "SELECT lane, agent FROM tasks WHERE rid = ? ORDER BY n LIMIT 1", (rid,)
    ).fetchone()
    lane, agent = first if first is not None else (None, None)
    kept = "json_group_array(n) FILTER (WHERE key IN (SELECT value FROM json_each(?)))"
    stored, others, kept_json = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE lane IS NOT ? OR agent IS NOT ?), "
        f"{kept if keep else '?'} FROM tasks WHERE rid = ?",
        (lane, agent, json.dumps(sorted(keep), ensure_ascii=False) if keep else "[]", rid),
    ).fetchone()
    stored = int(stored)
    if others:
        lanes = dict(
            db.execute("SELECT lane, count(*) FROM tasks WHERE rid = ? GROUP BY lane", (rid,))
        )
        shape = _Shape(stored, lanes)
    else:
        shape = _Shape(stored, {lane: stored} if stored else {})
        shape.one_lane_and_agent, shape.lane, shape.agent = True, lane, agent
    shape.kept = [int(n) for n in json.loads(kept_json)]
    return shape


def attempt_totals(
    db: sqlite3.Connection, rid: int
) -> list[tuple[str | None, str | None, int, int]]:
    """Every attempt of the run by (outcome, error kind): count and summed duration in whole
    nanoseconds (as `RunMetrics.seed` sums them), in one plain pass: the plain successes
    (most of them) summed in SQL, the others (failures, interruptions) added up here."""
    ns = "CAST(coalesce(duration, 0.0) * 1e9 + 0.5 AS INTEGER)"
    plain = "outcome = 'done' AND error_kind IS NULL"
    count, total, others = db.execute(
        f"SELECT count(*) FILTER (WHERE {plain}), sum({ns}) FILTER (WHERE {plain}), "
        f"json_group_array(json_array(outcome, error_kind, {ns})) "
        f"FILTER (WHERE NOT coalesce({plain}, 0)) FROM attempts WHERE rid = ?",
        (rid,),
    ).fetchone()
    groups: dict[tuple[str | None, str | None], list[int]] = {}
    if count:
        groups[("done", None)] = [int(count), int(total or 0)]
    for outcome, kind, d in json.loads(others):
        g = groups.setdefault((outcome, kind), [0, 0])
        g[0] += 1
        g[1] += int(d)
    return [(outcome, kind, c, d) for (outcome, kind), (c, d) in groups.items()]


def _results_pass(db: sqlite3.Connection, rid: int) -> _ResultsPass:
    """One plain pass over the run's results (no sort, no join, no per-row function)."""
    top = db.execute(
        "SELECT model FROM results WHERE rid = ? AND state = 'done' AND attempts > 0 "
        "ORDER BY n DESC LIMIT 1",
        (rid,),
    ).fetchone()
    model = top[0] if top is not None else None
    called = "FILTER (WHERE state = 'done' AND attempts > 0"
    row = db.execute(
        "SELECT count(*), json_group_array(n) FILTER (WHERE state != 'done'), "
        "count(*) FILTER (WHERE state = 'done' AND attempts <= 0), "
        f"count(*) {called}), sum(input_tokens) {called}), sum(output_tokens) {called}), "
        f"count(*) {called} AND model IS NOT ?), count(*) {called} AND latency <= 0), "
        f"min(latency) {called}), max(latency) {called}) FROM results WHERE rid = ?",
        (model, rid),
    ).fetchone()
    return _ResultsPass(model, row)


class _ResultsPass:
    """What `_results_pass` counted: the results, the numbers of those not done, and of the
    done ones: the cache answers, and of the called ones the count, tokens, how many have
    another model than the newest one's, the latencies <= 0, the smallest and largest."""

    def __init__(self, model: str | None, row: tuple[Any, ...]) -> None:
        self.model = model  # the newest called result's; `other_models`: those of another
        results, open_json, self.cached, count, tin, tout, *rest = row
        self.results = int(results)
        self.open: list[int] = [int(n) for n in json.loads(open_json)]
        self.count, self.input_tokens, self.output_tokens = (
            int(count),
            int(tin or 0),
            int(tout or 0),
        )
        self.other_models, self.zeros, self.lo, self.hi = rest

    def leave_out(self, done: Iterable[StoredResult]) -> None:
        """Take out the done results the resume loads in full (it counts them itself). The
        smallest and largest latency stay those of all: the resumed run's are the same."""
        for r in done:
            if r.attempts <= 0:
                self.cached -= 1
                continue
            self.count -= 1
            self.input_tokens -= r.input_tokens
            self.output_tokens -= r.output_tokens
            self.zeros -= r.latency_s <= 0
            self.other_models -= r.model != self.model

    def groups(
        self,
        db: sqlite3.Connection,
        rid: int,
        live_json: str,
        bucket_log: float,
        shape: _Shape,
        latency_sample: int,
    ) -> list[DoneGroup] | None:
        """The done results but those numbered in `live_json`, all of one lane and one
        agent (`shape`), as `DoneGroup`s: counts and tokens exact; the latency buckets exact
        up to `latency_sample` results, from an even sample of about that many above (see
        the module docstring). The called results' tokens are all on their first group, and
        each group's `lo` and `hi` are those of all (all a sketch takes from them); the
        cache answers are one group with no model and no tokens (nothing was called or
        spent). None when the called results have more than one model: `done_groups`."""
        lane, agent = shape.lane, shape.agent
        count = self.count
        if self.other_models:
            return None
        out = [DoneGroup(lane, agent, None, False, None, self.cached, 0, 0, 0.0, 0.0)]
        if not self.cached:
            out.clear()
        if count <= 0:
            return out
        tokens = [self.input_tokens, self.output_tokens]

        def group(bucket: int | None, k: int) -> DoneGroup:
            g = DoneGroup(
                lane, agent, self.model, True, bucket, k, tokens[0], tokens[1], self.lo, self.hi
            )
            tokens[0] = tokens[1] = 0
            return g

        if self.zeros:
            out.append(group(None, self.zeros))
        positive = count - self.zeros
        if positive <= 0:
            return out
        _math_functions(db)
        if positive <= latency_sample:
            rows = db.execute(
                f"SELECT {_BUCKET}, count(*) FROM results WHERE rid = ? AND state = 'done' "
                "AND attempts > 0 AND latency > 0 "
                "AND n NOT IN (SELECT value FROM json_each(?)) GROUP BY 1",
                (bucket_log, rid, live_json),
            ).fetchall()
            return out + [group(b, k) for b, k in rows]
        # an even sample: every step-th task number, probed (no pass over the rest)
        step = max(1, shape.stored // latency_sample)
        sampled = db.execute(
            "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + ? FROM s WHERE n + ? < ?) "
            f"SELECT {_BUCKET.replace('latency', 'r.latency')}, count(*) FROM s JOIN results r "
            "ON r.rid = ? AND r.n = s.n WHERE r.state = 'done' AND r.attempts > 0 "
            "AND r.latency > 0 GROUP BY 1",
            (step, step, shape.stored, bucket_log, rid),
        ).fetchall()
        if not sampled:  # none of the sampled tasks has one: count them all (`done_groups`)
            return None
        scaled = _scale([k for _, k in sampled], positive)
        return out + [group(b, k) for (b, _), k in zip(sampled, scaled, strict=True) if k]


def _scale(counts: list[int], total: int) -> list[int]:
    """`counts` scaled to add up to `total` (largest remainders), none below 0."""
    seen = sum(counts)
    exact = [k * total / seen for k in counts]
    out = [math.floor(x) for x in exact]
    short = total - sum(out)
    for i in sorted(range(len(counts)), key=lambda i: out[i] - exact[i])[:short]:
        out[i] += 1
    return out


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
