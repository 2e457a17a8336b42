"""What the service answers about stored runs, read from the SQLite store.

Every function here takes a read connection and returns plain JSON-able data; the service
calls them on its reader threads (`Reader`), never on the event loop, so a big query never
holds up the engine that shares the loop. They work on any run in the store: the ones this
server runs and the ones CLI processes run at the same time (WAL readers see the last
commit and never block a writer).

A run's events are its results in commit order. The store commits a batch of results in
one transaction and stamps every row of it with the batch's time (`finished_at`), so the
pair (`finished_at`, `n`) orders the results of a run as they became durable, and what a
reader sees is always a prefix of that order: a cursor made of it (the SSE event id) is
exact for reconnects. It assumes the wall clock does not step back under a running run.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection, Iterator
from typing import Any

from fanout.store.overview import display_status
from fanout.store.queries import lease_live, rid_of

#: fanout's run status (as `fanout runs` shows it) -> the OpenAI Batch vocabulary
OPENAI_STATUS = {
    "running": "in_progress",
    "done": "completed",
    "failed": "completed",  # a batch whose every request ended; `request_counts.failed` > 0
    "cancelled": "cancelled",
    "interrupted": "failed",  # resumable: `resumable` says so
    "crashed": "failed",
    "budget_exhausted": "failed",
}
FINISHED = ("done", "failed", "cancelled", "interrupted", "crashed", "budget_exhausted")
TERMINAL_TASK_STATES = ("done", "failed", "skipped", "cancelled")


def openai_status(status: str, cancel_requested: str | None = None) -> str:
    if status == "running" and cancel_requested:
        return "cancelling"
    return OPENAI_STATUS.get(status, "failed")


def _counts(db: sqlite3.Connection, rid: int, total: int) -> dict[str, int]:
    c = dict(db.execute("SELECT state, count(*) FROM results WHERE rid = ? GROUP BY state", (rid,)))
    return {
        "total": int(total),
        "completed": int(c.get("done", 0)),
        "failed": int(c.get("failed", 0)),
        "skipped": int(c.get("skipped", 0)),
        "cancelled": int(c.get("cancelled", 0)),
    }


_RUN_COLS = (
    "rid, id, kind, status, created_at, ended_at, total, lease_owner, lease_pid, lease_host, "
    "lease_until, cancel_requested"
)


def _run_row(
    row: tuple[Any, ...], db: sqlite3.Connection, owned: Collection[str]
) -> dict[str, Any]:
    from fanout.store.base import Lease

    rid, run_id, kind, status, created, ended, total = row[:7]
    lease = None if row[7] is None else Lease(*row[7:11])
    native = display_status(status, lease)
    return {
        "id": run_id,
        "kind": kind,
        "status": openai_status(native, row[11]),
        "fanout_status": native,
        "resumable": native in ("interrupted", "crashed", "budget_exhausted"),
        "created_at": created,
        "finished_at": ended,
        "request_counts": _counts(db, rid, total),
        "owner": "server" if run_id in owned else "other",
        "live": lease_live(lease),
    }


def list_runs(
    db: sqlite3.Connection, owned: Collection[str], limit: int = 200
) -> list[dict[str, Any]]:
    """Every run in the store, newest first (at most `limit`). `owned`: the ids of the
    runs servers on this store started (they say "server")."""
    rows = db.execute(
        f"SELECT {_RUN_COLS} FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)
    ).fetchall()
    return [_run_row(tuple(r), db, owned) for r in rows]


def run_summary(
    db: sqlite3.Connection, run_id: str, owned: Collection[str] = ()
) -> dict[str, Any] | None:
    row = db.execute(f"SELECT {_RUN_COLS} FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else _run_row(tuple(row), db, owned)


def run_detail(
    db: sqlite3.Connection, run_id: str, owned: Collection[str]
) -> dict[str, Any] | None:
    """The run's status, counts, where its time went, its lanes from the store."""
    from fanout.store.overview import run_status

    out = run_summary(db, run_id, owned)
    if out is None:
        return None
    st = run_status(db, run_id) or {}
    cost = None
    tin, tout = st.get("input_tokens", 0), st.get("output_tokens", 0)
    wall = float(st.get("wall_s") or 0.0)
    done = sum(out["request_counts"][k] for k in ("completed", "failed", "skipped", "cancelled"))
    out.update(
        {
            "breakdown": {},  # see `breakdown`: read apart, less often
            "states": st.get("states", {}),
            "lanes": [
                {
                    "name": name,
                    "in_flight": c.get("running", 0),
                    "limit": None,
                    "queued": c.get("waiting", 0),
                    "oldest_wait_s": None,
                }
                for name, c in (st.get("lanes") or {}).items()
            ],
            "limiter": [],
            "retries": st.get("retries", 0),
            "errors_by_class": st.get("errors_by_class", {}),
            "input_tokens": tin,
            "output_tokens": tout,
            "cost_usd": cost,
            "wall_s": wall,
            "throughput": round(done / wall, 3) if wall > 0 else None,
            "eta_s": st.get("eta_s"),
        }
    )
    return out


def breakdown(db: sqlite3.Connection, run_id: str) -> dict[str, float]:
    """Where the run's time went: seconds per kind of span, summed over its tasks."""
    from fanout.report.breakdown import breakdowns, has_spans, load_spans, run_shares

    rid = rid_of(db, run_id)
    if rid is None or not has_spans(db):
        return {}
    shares = run_shares(breakdowns(load_spans(db, rid)).values())
    return {k: round(v, 4) for k, v in shares.items()}


def task_rows(
    db: sqlite3.Connection,
    run_id: str,
    *,
    state: str | None = None,
    lane: str | None = None,
    agent: str | None = None,
    error: str | None = None,
    offset: int = 0,
    limit: int = 100,
) -> dict[str, Any] | None:
    """One page of a run's tasks with their state, filtered; `total` counts the matches."""
    from fanout.store.spec import spec_key

    rid = rid_of(db, run_id)
    if rid is None:
        return None
    running = {
        n
        for (n,) in db.execute(
            "SELECT a.n FROM attempts a LEFT JOIN results r ON r.rid = a.rid AND r.n = a.n "
            "WHERE a.rid = ? AND a.outcome IS NULL AND r.n IS NULL",
            (rid,),
        )
    }
    tries = dict(
        db.execute("SELECT n, max(attempt) FROM attempts WHERE rid = ? GROUP BY n", (rid,))
    )
    rows = db.execute(
        "SELECT t.n, t.key, t.spec, t.lane, t.agent, r.state, r.error, r.duration, r.attempts "
        "FROM tasks t LEFT JOIN results r ON r.rid = t.rid AND r.n = t.n "
        "WHERE t.rid = ? ORDER BY t.n",
        (rid,),
    )
    matched: list[dict[str, Any]] = []
    total = 0
    for n, key, spec, ln, ag, st, err, duration, attempts in rows:
        s = st or ("running" if n in running else "waiting")
        err_class = None if err is None else json.loads(err).get("class")
        if state and s != state:
            continue
        if lane and (ln or "default") != lane:
            continue
        if agent and ag != agent:
            continue
        if error and err_class != error:
            continue
        total += 1
        if offset <= total - 1 < offset + limit:
            matched.append(
                {
                    "key": key if key is not None else spec_key(spec),
                    "n": n,
                    "state": s,
                    "lane": ln or "default",
                    "agent": ag,
                    "tries": attempts if attempts is not None else tries.get(n, 0),
                    "error_class": err_class,
                    "wall_s": None if duration is None or duration < 0 else round(duration, 4),
                }
            )
    return {"total": total, "tasks": matched}


def task_detail(db: sqlite3.Connection, run_id: str, key: str) -> dict[str, Any] | None:
    """One task: its attempts, its spans, its output or error."""
    from fanout.store.spec import spec_key

    rid = rid_of(db, run_id)
    if rid is None:
        return None
    row = db.execute(
        "SELECT n, key, lane, agent FROM tasks WHERE rid = ? AND key = ?", (rid, key)
    ).fetchone()
    if row is None:  # a derived key is not stored: look for it among the specs
        for n, spec, lane, agent in db.execute(
            "SELECT n, spec, lane, agent FROM tasks WHERE rid = ? AND key IS NULL", (rid,)
        ):
            if spec_key(spec) == key:
                row = (n, key, lane, agent)
                break
    if row is None:
        return None
    n = row[0]
    attempts = [
        {
            "attempt": a,
            "t0": t0,
            "t1": None if t0 is None or dur is None else t0 + dur,
            "outcome": outcome,
            "error": cls if cls is None else f"{cls}:{kind}" if kind else cls,
            "tokens": tokens,
        }
        for a, t0, dur, outcome, cls, kind, tokens in db.execute(
            "SELECT attempt, started_at, duration, outcome, error_class, error_kind, tokens "
            "FROM attempts WHERE rid = ? AND n = ? ORDER BY attempt",
            (rid, n),
        )
    ]
    spans = [
        {"kind": k, "t0": t0, "t1": t1}
        for k, t0, t1 in db.execute(
            "SELECT kind, t0, t1 FROM spans WHERE rid = ? AND n = ? ORDER BY seq", (rid, n)
        )
    ]
    res = db.execute(
        "SELECT state, text, error, input_tokens, output_tokens FROM results "
        "WHERE rid = ? AND n = ?",
        (rid, n),
    ).fetchone()
    state = res[0] if res else ("running" if attempts and attempts[-1]["t1"] is None else "waiting")
    return {
        "key": row[1],
        "n": n,
        "lane": row[2] or "default",
        "agent": row[3],
        "state": state,
        "attempts": attempts,
        "spans": spans,
        "output": res[1] if res else None,
        "error": None if not res or res[2] is None else json.loads(res[2]),
        "tokens_in": res[3] if res else None,
        "tokens_out": res[4] if res else None,
    }


def result_lines(db: sqlite3.Connection, run_id: str) -> Iterator[str] | None:
    """The run's results as JSONL lines, as `fanout results` writes them: a batch run in
    input order (refused lines included, unfinished lines left out), any other run one
    result per task. None: no such run."""
    from fanout.batch.output import output_line
    from fanout.batch.parse import LineError
    from fanout.batch.run import KIND, stored_batch
    from fanout.store import queries

    info = queries.run_info(db, run_id)
    if info is None:
        return None
    tasks = queries.stub_tasks(db, run_id)
    results = queries.load_results(db, run_id, tasks)
    config = info["config"]

    def dumps(d: dict[str, Any]) -> str:
        return json.dumps(d, ensure_ascii=False) + "\n"

    if info["kind"] == KIND and isinstance(config.get("batch"), dict):
        by_n = {r.task.n: r for r in results}
        batch, _, _ = stored_batch(config, [t for t in tasks if t.n in by_n])
        return (
            dumps(output_line(item if isinstance(item, LineError) else by_n[item.n]))
            for item in batch.slots()
        )
    return (dumps(r.as_dict()) for r in results)


# -- events ----------------------------------------------------------------------------------

Cursor = tuple[float, int]
START: Cursor = (0.0, -1)


def parse_cursor(raw: str | None) -> Cursor:
    """The position an SSE client has seen up to (its `Last-Event-ID`); the start when
    absent or not one of ours."""
    if not raw:
        return START
    t, _, n = raw.strip().partition(":")
    try:
        return (float(t), int(n))
    except ValueError:
        return START


def cursor_id(c: Cursor) -> str:
    return f"{c[0]!r}:{c[1]}"


def events_after(
    db: sqlite3.Connection, run_id: str, after: Cursor, limit: int = 1000
) -> tuple[list[tuple[Cursor, dict[str, Any]]], dict[str, Any] | None]:
    """The run's task events after `after` in commit order (at most `limit`) and its
    summary now (None: no such run). Read in one transaction, so the counts never lag
    the events."""
    from fanout.store.spec import spec_key

    db.execute("BEGIN")
    try:
        summary = run_summary(db, run_id)
        rid = rid_of(db, run_id)
        if summary is None or rid is None:
            return [], None
        t, n = after
        rows = db.execute(
            "SELECT r.finished_at, r.n, r.state, r.error, r.duration, r.attempts, t.key, t.spec, "
            "t.lane, t.agent FROM results r JOIN tasks t ON t.rid = r.rid AND t.n = r.n "
            "WHERE r.rid = ? AND (r.finished_at > ? OR (r.finished_at = ? AND r.n > ?)) "
            "ORDER BY r.finished_at, r.n LIMIT ?",
            (rid, t, t, n, limit),
        ).fetchall()
    finally:
        db.execute("COMMIT")
    out = []
    for at, rn, state, err, dur, tries, key, spec, lane, agent in rows:
        out.append(
            (
                (at, rn),
                {
                    "key": key if key is not None else spec_key(spec),
                    "n": rn,
                    "state": state,
                    "lane": lane or "default",
                    "agent": agent,
                    "tries": tries,
                    "error_class": None if err is None else json.loads(err).get("class"),
                    "wall_s": None if dur is None or dur < 0 else round(dur, 4),  # < 0: cached
                    "at": at,
                },
            )
        )
    return out, summary


def now() -> float:
    return time.time()
