"""What is read from (and the few direct writes made to) the SQLite store, as functions of a
connection: the store's reader thread calls them, and so do `fanout runs`, `status`,
`results`, `cancel` and `cache`, which need no engine."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Sequence
from typing import Any

from fanout.store.base import (
    Lease,
    RunBusy,
    RunSnapshot,
    Segment,
    StoredResult,
    StoredTask,
)
from fanout.tasks import ErrorInfo, Result, Task, TaskState

HOST = socket.gethostname()
#: a lease lasts this long past its holder's last heartbeat
LEASE_S = 15.0
#: the holder renews its lease (and polls for cancellation) this often
HEARTBEAT_S = 0.5

ATTEMPT_UPSERT = (
    "INSERT INTO attempts (rid, n, attempt, started_at, duration, outcome, error_class, "
    "error_kind, tokens) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (rid, n, attempt) DO UPDATE SET "
    "duration = excluded.duration, outcome = excluded.outcome, "
    "error_class = excluded.error_class, error_kind = excluded.error_kind, "
    "tokens = excluded.tokens, started_at = coalesce(attempts.started_at, excluded.started_at)"
)
RESULT_UPSERT = "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
RESULT_COLS = (
    "n, state, text, data, finish_reason, model, input_tokens, output_tokens, attempts, "
    "latency, error, duration, cache_key"
)
_STATES = {s.value: s for s in TaskState}
_CHUNK = 500  # keys per `IN (...)` query


def _error(raw: str | None) -> ErrorInfo | None:
    if raw is None:
        return None
    d = json.loads(raw)
    return ErrorInfo(d["class"], d["kind"], d["message"], d.get("status"))


def stored_result(row: Sequence[Any]) -> StoredResult:
    return StoredResult(
        row[0],
        _STATES[row[1]],
        row[2],
        None if row[3] is None else json.loads(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        _error(row[10]),
        row[11],
        row[12],
    )


def rid_of(db: sqlite3.Connection, run_id: str) -> int | None:
    row = db.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()
    return None if row is None else int(row[0])


def find_run(db: sqlite3.Connection, ref: str) -> str | None:
    """A run id from an id or a unique prefix of one (`r-0612ab` for `r-0612abcdef`)."""
    if rid_of(db, ref) is not None:
        return ref
    rows = db.execute(
        "SELECT id FROM runs WHERE id LIKE ? ESCAPE '\\' LIMIT 2",
        (ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
    ).fetchall()
    return str(rows[0][0]) if len(rows) == 1 else None


# -- results --------------------------------------------------------------------------------


class _RunRef:
    """What a stub task needs of its run: the id (`task.id` is `<run>-<n>`)."""

    __slots__ = ("id",)

    def __init__(self, run_id: str) -> None:
        self.id = run_id


def stub_tasks(db: sqlite3.Connection, run_id: str) -> list[Task]:
    """Tasks good enough to label results (key, lane, agent, meta): never to run."""
    from fanout.store.spec import spec_key, spec_meta

    rid = rid_of(db, run_id)
    if rid is None:
        return []
    ref = _RunRef(run_id)
    out: list[Task] = []
    for n, key, lane, agent, spec in db.execute(
        "SELECT n, key, lane, agent, spec FROM tasks WHERE rid = ? ORDER BY n", (rid,)
    ):
        if key is None:
            key = spec_key(spec)
        t = Task("", key=key, lane=lane, agent=agent, meta=spec_meta(spec) or None)
        t.run = ref
        t.n = n
        out.append(t)
    return out


def load_results(
    db: sqlite3.Connection, run_id: str, tasks: Sequence[Task] | None = None
) -> list[Result]:
    rid = rid_of(db, run_id)
    if rid is None:
        return []
    if tasks is None:
        tasks = stub_tasks(db, run_id)
    out: list[Result] = []
    for row in db.execute(
        "SELECT n, state, text, data, finish_reason, model, input_tokens, output_tokens, "
        "attempts, latency, error FROM results WHERE rid = ? ORDER BY n",
        (rid,),
    ):
        n = row[0]
        if n >= len(tasks):
            continue
        out.append(_result(tasks[n], row))
    return out


def _result(task: Task, row: Sequence[Any]) -> Result:
    """A `Result` from a row whose columns are, in order: n, state, text, data,
    finish_reason, model, input_tokens, output_tokens, attempts, latency, error."""
    return Result(
        task,
        _STATES[row[1]],
        text=row[2],
        data=None if row[3] is None else json.loads(row[3]),
        finish_reason=row[4],
        model=row[5],
        input_tokens=row[6],
        output_tokens=row[7],
        attempts=row[8],
        latency_s=row[9],
        error=_error(row[10]),
    )


def iter_results(db: sqlite3.Connection, run_id: str, *, by_line: bool = False) -> Iterator[Result]:
    """A run's stored results one at a time, in task order (or by their input line, a
    batch's `meta.line`), each with a stub task (key, lane, agent, meta): memory stays
    that of one result, however long the run."""
    from fanout.store.spec import spec_key, spec_meta

    rid = rid_of(db, run_id)
    if rid is None:
        return
    order = "json_extract(t.spec, '$.meta.line'), r.n" if by_line else "r.n"
    ref = _RunRef(run_id)
    for row in db.execute(
        "SELECT r.n, r.state, r.text, r.data, r.finish_reason, r.model, r.input_tokens, "
        "r.output_tokens, r.attempts, r.latency, r.error, t.key, t.lane, t.agent, t.spec "
        "FROM results r JOIN tasks t ON t.rid = r.rid AND t.n = r.n "
        f"WHERE r.rid = ? ORDER BY {order}",
        (rid,),
    ):
        spec = row[14]
        key = row[11] if row[11] is not None else spec_key(spec)
        t = Task("", key=key, lane=row[12], agent=row[13], meta=spec_meta(spec) or None)
        t.run = ref
        t.n = row[0]
        yield _result(t, row)


def task_lines(db: sqlite3.Connection, run_id: str) -> set[int]:
    """The input lines (a batch's `meta.line`) of a run's stored tasks."""
    rid = rid_of(db, run_id)
    if rid is None:
        return set()
    rows = db.execute("SELECT json_extract(spec, '$.meta.line') FROM tasks WHERE rid = ?", (rid,))
    return {int(line) for (line,) in rows if line is not None}


def sink_position(db: sqlite3.Connection, run_id: str, sink: str) -> int:
    row = db.execute(
        "SELECT position FROM acks JOIN runs USING (rid) WHERE id = ? AND sink = ?",
        (run_id, sink),
    ).fetchone()
    return -1 if row is None else int(row[0])


def run_info(db: sqlite3.Connection, run_id: str, counts: bool = True) -> dict[str, Any] | None:
    """The runs row of `run_id`, and with `counts` its results and attempts counted (a scan
    of each: seconds at a million rows, which a resume or `run_kind` does not need)."""
    row = db.execute(
        "SELECT rid, kind, created_at, config, status, ended_at, total FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    if row is None:
        return None
    info = {
        "run_id": run_id,
        "kind": row[1],
        "created_at": row[2],
        "config": json.loads(row[3]),
        "tasks": row[6],
        "status": row[4],
        "ended_at": row[5],
    }
    if counts:
        rid = row[0]
        (results,) = db.execute("SELECT count(*) FROM results WHERE rid = ?", (rid,)).fetchone()
        started, failed = db.execute(
            "SELECT count(*), count(*) FILTER (WHERE outcome = 'error') FROM attempts "
            "WHERE rid = ?",
            (rid,),
        ).fetchone()
        info.update(results=results, attempts_started=started, attempts_failed=failed)
    return info


# -- resuming ---------------------------------------------------------------------------------


def run_row(db: sqlite3.Connection, run_id: str) -> tuple[Any, ...] | None:
    """The runs row a snapshot is made from (its rid first), or None for an unknown run."""
    row: tuple[Any, ...] | None = db.execute(
        "SELECT rid, kind, status, created_at, config, settings, lease_owner, lease_pid, "
        "lease_host, lease_until, cancel_requested FROM runs WHERE id = ?",
        (run_id,),
    ).fetchone()
    return row


def snapshot_of(
    db: sqlite3.Connection,
    run_id: str,
    row: tuple[Any, ...],
    tasks: list[StoredTask],
    results: dict[int, StoredResult],
    attempts: list[Any],
) -> RunSnapshot:
    """A snapshot of the run whose `run_row` is `row`, with the tasks, results and attempts
    the caller chose to read (all of them to resume in full, the live ones to resume lean)."""
    rid = row[0]
    acks = dict(db.execute("SELECT sink, position FROM acks WHERE rid = ?", (rid,)).fetchall())
    segments = [
        Segment(*s)
        for s in db.execute(
            "SELECT started_at, last_seen, wall_s, concurrency FROM segments WHERE rid = ? "
            "ORDER BY seq",
            (rid,),
        )
    ]
    return RunSnapshot(
        run_id=run_id,
        kind=row[1],
        status=row[2],
        created_at=row[3],
        config=json.loads(row[4]),
        settings=json.loads(row[5]),
        tasks=tasks,
        results=results,
        attempts=attempts,
        acks=acks,
        segments=segments,
        lease=None if row[6] is None else Lease(row[6], row[7], row[8], row[9]),
        cancel_requested=row[10],
        free=dict(
            db.execute(
                "SELECT n, count(*) FROM attempts WHERE rid = ? AND free = 1 GROUP BY n", (rid,)
            ).fetchall()
        ),
    )


def load_snapshot(db: sqlite3.Connection, run_id: str) -> RunSnapshot | None:
    row = run_row(db, run_id)
    if row is None:
        return None
    rid = row[0]
    from fanout.store.spec import spec_key

    tasks = [
        StoredTask(n, key if key is not None else spec_key(spec), lane, agent, spec)
        for n, key, lane, agent, spec in db.execute(
            "SELECT n, key, lane, agent, spec FROM tasks WHERE rid = ? ORDER BY n", (rid,)
        )
    ]
    results = {
        r.n: r
        for r in map(
            stored_result,
            db.execute(f"SELECT {RESULT_COLS} FROM results WHERE rid = ? ORDER BY n", (rid,)),
        )
    }
    attempts = db.execute(
        "SELECT n, attempt, outcome, error_kind, duration FROM attempts WHERE rid = ? "
        "ORDER BY n, attempt",
        (rid,),
    ).fetchall()
    return snapshot_of(db, run_id, row, tasks, results, attempts)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    except OSError:
        return False
    return True


def lease_live(lease: Lease | None, now: float | None = None) -> bool:
    """Whether `lease`'s holder may still be running: not expired, and (on this host) its
    process exists. A crashed holder's lease is stale at once on this host, and after
    `LEASE_S` without a heartbeat anywhere."""
    if lease is None or lease.owner is None:
        return False
    if (lease.until or 0.0) < (time.time() if now is None else now):
        return False
    return not (lease.host == HOST and lease.pid is not None and not pid_alive(lease.pid))


def claim(db: sqlite3.Connection, run_id: str, lease: Lease) -> None:
    """Take the lease of `run_id` for `lease.owner`, inside one write transaction so two
    processes claiming at once cannot both win."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute(
            "SELECT lease_owner, lease_pid, lease_host, lease_until FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise KeyError(run_id)
        held = None if row[0] is None else Lease(*row)
        if held is not None and held.owner != lease.owner and lease_live(held):
            raise RunBusy(
                f"run {run_id} is being run by process {held.pid} on {held.host}; "
                f"wait for it to finish, or stop it first (fanout cancel {run_id})",
                run_id=run_id,
            )
        db.execute(
            "UPDATE runs SET lease_owner = ?, lease_pid = ?, lease_host = ?, lease_until = ? "
            "WHERE id = ?",
            (lease.owner, lease.pid, lease.host, lease.until, run_id),
        )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on a full disk
            db.execute("ROLLBACK")
        raise


def cancel_requests(db: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    ids = list(run_ids)
    for i in range(0, len(ids), _CHUNK):
        part = ids[i : i + _CHUNK]
        marks = ",".join("?" * len(part))
        for run_id, reason in db.execute(
            f"SELECT id, cancel_requested FROM runs WHERE id IN ({marks}) "
            "AND cancel_requested IS NOT NULL",
            part,
        ):
            out[run_id] = reason
    return out


def request_cancel(db: sqlite3.Connection, run_id: str, reason: str) -> str:
    """Ask for `run_id` to be cancelled. Returns "asked" when a live process runs it (it
    will see the request within a heartbeat), "cancelled" when none does (the run is marked
    cancelled here), or the status of a run that has already finished."""
    db.execute("BEGIN IMMEDIATE")
    try:
        row = db.execute(
            "SELECT status, lease_owner, lease_pid, lease_host, lease_until FROM runs WHERE id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            raise KeyError(run_id)
        status = row[0]
        lease = None if row[1] is None else Lease(*row[1:])
        if lease_live(lease):
            db.execute("UPDATE runs SET cancel_requested = ? WHERE id = ?", (reason, run_id))
            outcome = "asked"
        elif status in ("done", "failed", "cancelled"):
            outcome = status
        else:
            db.execute(
                "UPDATE runs SET status = 'cancelled', ended_at = coalesce(ended_at, ?), "
                "lease_owner = NULL WHERE id = ?",
                (time.time(), run_id),
            )
            outcome = "cancelled"
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on a full disk
            db.execute("ROLLBACK")
        raise
    return outcome


# -- the result cache -------------------------------------------------------------------------


def cache_lookup(
    db: sqlite3.Connection, keys: Sequence[bytes], newer_than: float
) -> dict[bytes, Any]:
    out: dict[bytes, Any] = {}
    ks = list(keys)
    for i in range(0, len(ks), _CHUNK):
        part = ks[i : i + _CHUNK]
        marks = ",".join("?" * len(part))
        for key, text, data, finish, model, it, ot, latency in db.execute(
            "SELECT key, text, data, finish_reason, model, input_tokens, output_tokens, latency "
            f"FROM cache WHERE key IN ({marks}) AND created_at > ?",
            (*part, newer_than),
        ):
            out[key] = StoredResult(
                -1,
                TaskState.DONE,
                text,
                None if data is None else json.loads(data),
                finish,
                model,
                it,
                ot,
                0,
                latency,
                None,
                -1.0,
                key,
            )
    return out


def cache_stats(db: sqlite3.Connection, ttl_s: float | None = None) -> dict[str, Any]:
    entries, size, oldest, newest = db.execute(
        "SELECT count(*), coalesce(sum(length(text)) + sum(coalesce(length(data), 0)), 0), "
        "min(created_at), max(created_at) FROM cache"
    ).fetchone()
    (hits,) = db.execute("SELECT count(*) FROM results WHERE cached = 1").fetchone()
    out = {
        "entries": entries,
        "text_bytes": size,
        "oldest": oldest,
        "newest": newest,
        "hits": hits,
    }
    if ttl_s is not None:
        (expired,) = db.execute(
            "SELECT count(*) FROM cache WHERE created_at <= ?", (time.time() - ttl_s,)
        ).fetchone()
        out["expired"] = expired
    return out


def cache_clear(db: sqlite3.Connection, older_than_s: float | None = None) -> int:
    db.execute("BEGIN IMMEDIATE")
    try:
        if older_than_s is None:
            cur = db.execute("DELETE FROM cache")
        else:
            cur = db.execute(
                "DELETE FROM cache WHERE created_at <= ?", (time.time() - older_than_s,)
            )
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on a full disk
            db.execute("ROLLBACK")
        raise
    return cur.rowcount
