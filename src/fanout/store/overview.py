"""Summaries of stored runs for `fanout runs` and `fanout status`: read-only queries that
work while another process is writing the run (WAL readers see the last commit)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from typing import Any

from fanout.store.base import Lease
from fanout.store.queries import lease_live

#: a run whose process is gone without closing it
CRASHED = "crashed"


def display_status(status: str, lease: Lease | None) -> str:
    """ "running" only while a live process holds the run; else it crashed (resumable)."""
    if status == "running" and not lease_live(lease):
        return CRASHED
    return status


def _lease(row: tuple[Any, ...]) -> Lease | None:
    return None if row[0] is None else Lease(*row)


def _walls(db: sqlite3.Connection, rids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for i in range(0, len(rids), 500):
        part = rids[i : i + 500]
        marks = ",".join("?" * len(part))
        for rid, started, seen, wall in db.execute(
            f"SELECT rid, started_at, last_seen, wall_s FROM segments WHERE rid IN ({marks}) "
            "ORDER BY rid, seq",
            part,
        ):
            w = wall if wall is not None else max(0.0, (seen or started) - started)
            out[rid] = out.get(rid, 0.0) + w
    return out


def list_runs(db: sqlite3.Connection, limit: int = 50) -> list[dict[str, Any]]:
    """The latest runs, newest first: id, kind, status, done/total, failed, started, wall."""
    rows = db.execute(
        "SELECT rid, id, kind, status, created_at, total, lease_owner, lease_pid, lease_host, "
        "lease_until FROM runs ORDER BY created_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    walls = _walls(db, [r[0] for r in rows])
    out: list[dict[str, Any]] = []
    for rid, run_id, kind, status, created, total, *lease in rows:
        counts = dict(
            db.execute(
                "SELECT state, count(*) FROM results WHERE rid = ? GROUP BY state", (rid,)
            ).fetchall()
        )
        out.append(
            {
                "run_id": run_id,
                "kind": kind,
                "status": display_status(status, _lease(tuple(lease))),
                "done": counts.get("done", 0),
                "total": total,
                "failed": counts.get("failed", 0),
                "started": created,
                "wall_s": round(walls.get(rid, 0.0), 3),
            }
        )
    return out


def run_status(db: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    """Where a run is: counts by state and by lane, retries, errors by class, tokens, ETA."""
    row = db.execute(
        "SELECT rid, kind, status, created_at, total, lease_owner, lease_pid, lease_host, "
        "lease_until, cancel_requested FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    rid, kind, status, created, total = row[:5]
    lease = _lease(row[5:9])
    live = lease_live(lease)
    running_ns: set[int] = set()
    if live:
        running_ns = {
            n
            for (n,) in db.execute(
                "SELECT a.n FROM attempts a LEFT JOIN results r ON r.rid = a.rid AND r.n = a.n "
                "WHERE a.rid = ? AND a.outcome IS NULL AND r.n IS NULL",
                (rid,),
            )
        }
    by_lane: dict[str, Counter[str]] = {}
    states: Counter[str] = Counter()
    lane_of: dict[int, str] = {}
    for n, lane, state in db.execute(
        "SELECT t.n, t.lane, r.state FROM tasks t LEFT JOIN results r ON r.rid = t.rid "
        "AND r.n = t.n WHERE t.rid = ?",
        (rid,),
    ):
        lane = lane or "default"
        lane_of[n] = lane
        if state is None:
            state = "running" if n in running_ns else "waiting"
        states[state] += 1
        by_lane.setdefault(lane, Counter())[state] += 1
    retries: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for cls, kind_ in db.execute(
        "SELECT error_class, error_kind FROM attempts WHERE rid = ? AND outcome = 'error'",
        (rid,),
    ):
        retries[kind_ or "error"] += 1
        errors[cls or "error"] += 1
    for (raw,) in db.execute(
        "SELECT error FROM results WHERE rid = ? AND state = 'failed' AND error IS NOT NULL",
        (rid,),
    ):
        errors[json.loads(raw).get("class") or "error"] += 1
    tin, tout = db.execute(
        "SELECT coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0) "
        "FROM results WHERE rid = ? AND attempts > 0",
        (rid,),
    ).fetchone()
    (cached,) = db.execute(
        "SELECT count(*) FROM results WHERE rid = ? AND cached = 1", (rid,)
    ).fetchone()
    segs = db.execute(
        "SELECT started_at, last_seen, wall_s FROM segments WHERE rid = ? ORDER BY seq", (rid,)
    ).fetchall()
    wall = 0.0
    for started, seen, w in segs:
        wall += w if w is not None else max(0.0, (seen or started) - started)
    finished = sum(states[s] for s in ("done", "failed", "skipped", "cancelled"))
    eta = None
    if live and segs:
        seg_start = segs[-1][0]
        (recent,) = db.execute(
            "SELECT count(*) FROM results WHERE rid = ? AND finished_at >= ?", (rid, seg_start)
        ).fetchone()
        elapsed = time.time() - seg_start
        if recent and elapsed > 0 and total > finished:
            eta = round((total - finished) / (recent / elapsed), 1)
    return {
        "run_id": run_id,
        "kind": kind,
        "status": display_status(status, lease),
        "started": created,
        "wall_s": round(wall, 3),
        "total": total,
        "states": dict(states),
        "lanes": {k: dict(v) for k, v in sorted(by_lane.items())},
        "retries": sum(retries.values()),
        "retries_by_kind": dict(retries),
        "errors_by_class": dict(errors),
        "input_tokens": tin,
        "output_tokens": tout,
        "cached": cached,
        "eta_s": eta,
        "process": {"pid": lease.pid, "host": lease.host} if live and lease else None,
        "cancel_requested": row[9],
    }
