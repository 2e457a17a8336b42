"""`SqliteStore`: the run store in one SQLite file (WAL), the default for the CLI.

One writer thread owns the write connection and applies the journal's batches, one
transaction per batch, `synchronous=FULL`: when `write()` returns, the batch survives a
crash of the process and a power cut (the WAL is fsynced at every commit; group commit
amortises that over the batch). The event loop never touches the file: writes go to the
writer thread, reads to a reader thread with its own connection (WAL readers never block
the writer, nor another process's). Several processes may share the file: SQLite's locks
serialise their writers, and a run's lease keeps two of them from running the same run.

Where the file lives: `$FANOUT_HOME/fanout.db` when `FANOUT_HOME` is set, else the
platform's user data dir (`~/.local/share/fanout` or `$XDG_DATA_HOME/fanout` on Linux,
`~/Library/Application Support/fanout` on macOS, `%LOCALAPPDATA%\\fanout` on Windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fanout.errors import ConfigError, FanoutError
from fanout.paths import data_dir
from fanout.store import queries
from fanout.store.base import (
    CACHE_HIT,
    CACHE_STORE,
    AttemptFailed,
    AttemptInterrupted,
    AttemptStarted,
    Heartbeat,
    Lease,
    Op,
    OpenRun,
    ResultRecorded,
    ResultsDropped,
    RunClosed,
    RunOpened,
    RunResumed,
    RunSnapshot,
    Sampled,
    SinkAcked,
    SpanBatch,
    TasksAdded,
)
from fanout.store.lean import load_open_run
from fanout.store.migrations import migrate
from fanout.tasks import Result, Task

DB_NAME = "fanout.db"
BUSY_TIMEOUT_S = 30.0  # another process's write transaction: wait this long for it
#: the journal waits this long after a commit before the next one, unless this many ops
#: are waiting: commits come in groups even when results trickle in one by one
COMMIT_INTERVAL_S = 0.002
COMMIT_GROUP_OPS = 512

T = TypeVar("T")

_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=str
).encode


def default_path() -> Path:
    return data_dir() / DB_NAME


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, FULL sync."""
    try:
        db = sqlite3.connect(
            path, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
        )
    except sqlite3.Error as exc:
        raise store_error(path, exc, ConfigError) from None
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
    except sqlite3.Error as exc:
        db.close()
        raise store_error(path, exc, ConfigError) from None
    except BaseException:
        db.close()
        raise
    return db


E = TypeVar("E", bound=FanoutError)


def store_error(path: str | os.PathLike[str], exc: sqlite3.Error, kind: type[E]) -> E:
    """SQLite's error as one line that names the file and what the user can do about it."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF  # the primary result code
    if code == sqlite3.SQLITE_FULL:
        fix = "free space on its disk, or set FANOUT_HOME to a folder on another disk"
        return kind(f"the run store {path} is full ({exc}): {fix}")
    if code in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM):
        fix = "make it and its folder writable, or set FANOUT_HOME to a writable folder"
        return kind(f"cannot write the run store {path} ({exc}): {fix}")
    if code in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return kind(
            f"the run store {path} stayed locked by another process for {BUSY_TIMEOUT_S:g} s"
            f" ({exc}): let that process finish, then try again"
        )
    return kind(f"the run store {path} failed: {exc}")


def open_store_file(path: str | os.PathLike[str] | None = None) -> Path:
    """Create the store file (and its folder) if needed and bring its schema up to date."""
    p = Path(path) if path is not None else default_path()
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder for the run store {p}: {exc}") from None
    with contextlib.closing(connect(p)) as db:
        try:
            migrate(db)
        except sqlite3.Error as exc:
            raise store_error(p, exc, ConfigError) from None
    return p


@contextlib.contextmanager
def opened(path: str | os.PathLike[str] | None = None) -> Iterator[sqlite3.Connection]:
    """A connection to an up-to-date store, closed on exit (for `fanout runs` and friends)."""
    p = open_store_file(path)
    with contextlib.closing(connect(p)) as db:
        yield db


class SqliteStore:
    """The run store in a SQLite file; `path` defaults to `default_path()`."""

    persistent = True
    commit_interval_s = COMMIT_INTERVAL_S
    commit_group_ops = COMMIT_GROUP_OPS

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = open_store_file(path)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="fanout-store-writer")
        self._reader = ThreadPoolExecutor(1, thread_name_prefix="fanout-store-reader")
        self._conns: list[sqlite3.Connection] = []
        self._local = threading.local()
        self._rids: dict[str, int] = {}  # run id -> rid (writer thread only)
        self._segment: dict[int, int] = {}  # rid -> this process's segment number
        #: rid -> what this process adds to its spans' numbers (a resumed run's go on after
        #: the ones of its earlier segments)
        self._span_base: dict[int, int] = {}
        self._closed = False
        self.batches = 0

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

    # -- threads and connections ---------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = connect(self.path)
            self._conns.append(db)
        return db

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, lambda: fn(self._db()))

    async def _on_writer(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the store is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, lambda: fn(self._db()))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        for ex in (self._writer, self._reader):
            await loop.run_in_executor(ex, self._close_local)
            ex.shutdown(wait=True)

    def _close_local(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            self._conns.remove(db)
            db.close()

    # -- writing ----------------------------------------------------------------------------

    async def write(self, ops: Sequence[Op]) -> None:
        try:
            await self._on_writer(lambda db: self._apply(db, ops))
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, FanoutError) from None
        self.batches += 1

    def _rid(self, db: sqlite3.Connection, run_id: str) -> int:
        rid = self._rids.get(run_id)
        if rid is None:
            row = db.execute("SELECT rid FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise KeyError(f"run {run_id!r} is not in the store")
            rid = self._rids[run_id] = int(row[0])
        return rid

    def _apply(self, db: sqlite3.Connection, ops: Sequence[Op]) -> None:
        """One transaction for the whole batch. Rows are gathered per table and written
        with `executemany`; an attempt that started and ended in the batch is one row."""
        now = time.time()
        rids = self._rids
        tasks: list[tuple[Any, ...]] = []
        totals: dict[int, int] = {}
        starts: dict[tuple[int, int, int], float] = {}
        ends: list[tuple[Any, ...]] = []
        frees: list[tuple[int, int, int]] = []
        results: list[tuple[Any, ...]] = []
        cache: list[tuple[Any, ...]] = []
        spans: list[tuple[Any, ...]] = []
        first_tokens: list[tuple[Any, ...]] = []
        span_base = self._span_base

        def add_spans(rid: int, n: int, batch: SpanBatch) -> None:
            clock, seq, rows = batch
            seq += span_base.get(rid, 0) if span_base else 0
            # an attempt's own span is its `attempts` row (start, duration, outcome): kept
            # once, there; readers (report/breakdown.py) put it back among the waits
            spans.extend(
                [
                    (rid, n, seq + i, k, t0 + clock, t1 + clock, attempt, detail)
                    for i, (k, t0, t1, attempt, detail, _) in enumerate(rows)
                    if k != "run"
                ]
            )
            for _, _, _, attempt, _, first_token in rows:
                if first_token is not None:
                    first_tokens.append((first_token + clock, rid, n, attempt))

        def flush() -> None:
            if tasks:
                db.executemany("INSERT OR IGNORE INTO tasks VALUES (?,?,?,?,?,?)", tasks)
                tasks.clear()
            for rid, total in totals.items():
                db.execute("UPDATE runs SET total = max(total, ?) WHERE rid = ?", (total, rid))
            totals.clear()
            if ends:
                merged = [
                    (r[0], r[1], r[2], starts.pop((r[0], r[1], r[2]), None), *r[3:]) for r in ends
                ]
                db.executemany(queries.ATTEMPT_UPSERT, merged)
                ends.clear()
            if frees:  # (after the upsert that made their rows)
                db.executemany(
                    "UPDATE attempts SET free = 1 WHERE rid = ? AND n = ? AND attempt = ?", frees
                )
                frees.clear()
            if starts:
                db.executemany(
                    "INSERT OR IGNORE INTO attempts (rid, n, attempt, started_at) VALUES (?,?,?,?)",
                    [(*k, v) for k, v in starts.items()],
                )
                starts.clear()
            if results:
                db.executemany(queries.RESULT_UPSERT, results)
                results.clear()
            if cache:
                db.executemany("INSERT OR REPLACE INTO cache VALUES (?,?,?,?,?,?,?,?,?)", cache)
                cache.clear()
            if spans:
                db.executemany("INSERT OR IGNORE INTO spans VALUES (?,?,?,?,?,?,?,?)", spans)
                spans.clear()
            if first_tokens:
                db.executemany(
                    "UPDATE attempts SET first_token_at = ? "
                    "WHERE rid = ? AND n = ? AND attempt = ?",
                    first_tokens,
                )
                first_tokens.clear()

        db.execute("BEGIN IMMEDIATE")
        try:
            for op in ops:
                tp = type(op)
                if tp is AttemptStarted:
                    assert isinstance(op, AttemptStarted)
                    rid = rids.get(op.run_id) or self._rid(db, op.run_id)
                    starts[(rid, op.n, op.attempt)] = op.t
                    if op.spans:
                        add_spans(rid, op.n, op.spans)
                elif tp is ResultRecorded:
                    assert isinstance(op, ResultRecorded)
                    rid = rids.get(op.run_id) or self._rid(db, op.run_id)
                    r = op.result
                    state = r.state  # a StrEnum: sqlite3 takes it as its text
                    if op.duration >= 0.0:
                        err = r.error
                        ends.append(
                            (
                                rid,
                                op.n,
                                r.attempts,
                                op.duration,
                                state,
                                err.error_class if err else None,
                                err.kind if err else None,
                                r.input_tokens + r.output_tokens,
                            )
                        )
                    results.append(_result_row(rid, op, now))
                    if op.spans:
                        add_spans(rid, op.n, op.spans)
                    if op.cache == CACHE_STORE and op.cache_key is not None and r.ok:
                        cache.append(_cache_row(op, now))
                elif tp is TasksAdded:
                    assert isinstance(op, TasksAdded)
                    rid = rids.get(op.run_id) or self._rid(db, op.run_id)
                    specs = op.specs
                    for i, t in enumerate(op.tasks):
                        spec = specs[i] if specs is not None else None
                        # a derived key is derived again from the spec on resume: not kept
                        key = t.key if t.has_explicit_key or spec is None else None
                        tasks.append((rid, t.n, key, t.lane, t.agent, spec))
                    if op.tasks:
                        top = op.tasks[-1].n + 1
                        totals[rid] = max(totals.get(rid, 0), top)
                elif tp is AttemptFailed:
                    assert isinstance(op, AttemptFailed)
                    rid = rids.get(op.run_id) or self._rid(db, op.run_id)
                    e = op.error
                    ends.append(
                        (rid, op.n, op.attempt, op.duration, "error", e.error_class, e.kind, 0)
                    )
                    if op.free:
                        frees.append((rid, op.n, op.attempt))
                    if op.spans:
                        add_spans(rid, op.n, op.spans)
                elif tp is AttemptInterrupted:
                    assert isinstance(op, AttemptInterrupted)
                    rid = rids.get(op.run_id) or self._rid(db, op.run_id)
                    ends.append((rid, op.n, op.attempt, op.duration, "interrupted", None, None, 0))
                    if op.spans:
                        add_spans(rid, op.n, op.spans)
                else:
                    flush()  # the rare ops apply in order with what came before them
                    self._apply_rare(db, op, now)
            flush()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    def _apply_rare(self, db: sqlite3.Connection, op: Op, now: float) -> None:
        if isinstance(op, RunOpened):
            lease = _lease_values(op.owner)
            cur = db.execute(
                "INSERT OR IGNORE INTO runs (id, kind, status, created_at, config, settings, "
                "lease_owner, lease_pid, lease_host, lease_until) "
                "VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    op.run_id,
                    op.kind,
                    op.created_at,
                    _dumps(dict(op.config)),
                    _dumps(dict(op.settings)),
                    *lease,
                ),
            )
            rid = self._rid(db, op.run_id) if cur.rowcount == 0 else int(cur.lastrowid or 0)
            self._rids[op.run_id] = rid
            self._segment[rid] = 0
            db.execute(
                "INSERT OR IGNORE INTO segments (rid, seq, started_at, last_seen, concurrency) "
                "VALUES (?, 0, ?, ?, ?)",
                (rid, op.created_at, op.created_at, op.concurrency),
            )
        elif isinstance(op, RunResumed):
            rid = self._rid(db, op.run_id)
            db.execute(
                "UPDATE runs SET status = 'running', ended_at = NULL, config = ?, settings = ?, "
                "cancel_requested = NULL WHERE rid = ?",
                (_dumps(dict(op.config)), _dumps(dict(op.settings)), rid),
            )
            # attempts that were running when the last process stopped will never end
            db.execute(
                "UPDATE attempts SET outcome = 'interrupted' WHERE rid = ? AND outcome IS NULL",
                (rid,),
            )
            # a segment per resume, found again by its start if this op is applied twice
            row = db.execute(
                "SELECT seq FROM segments WHERE rid = ? AND started_at = ?", (rid, op.t)
            ).fetchone()
            if row is None:
                row = db.execute("SELECT max(seq) + 1 FROM segments WHERE rid = ?", (rid,))
                row = row.fetchone()
                top = db.execute("SELECT max(seq) + 1 FROM spans WHERE rid = ?", (rid,))
                self._span_base[rid] = int(top.fetchone()[0] or 0)
            seq = int(row[0] if row and row[0] is not None else 0)
            self._segment[rid] = seq
            db.execute(
                "INSERT OR IGNORE INTO segments (rid, seq, started_at, last_seen, concurrency) "
                "VALUES (?, ?, ?, ?, ?)",
                (rid, seq, op.t, op.t, op.concurrency),
            )
        elif isinstance(op, ResultsDropped):
            rid = self._rid(db, op.run_id)
            db.executemany("DELETE FROM results WHERE rid = ? AND n = ?", [(rid, n) for n in op.ns])
        elif isinstance(op, SinkAcked):
            db.execute(
                "INSERT INTO acks VALUES (?, ?, ?) "
                "ON CONFLICT (rid, sink) DO UPDATE SET position = excluded.position",
                (self._rid(db, op.run_id), op.sink, op.position),
            )
        elif isinstance(op, Heartbeat):
            rid = self._rid(db, op.run_id)
            db.execute(
                "UPDATE runs SET lease_until = ? WHERE rid = ? AND lease_owner = ?",
                (op.until, rid, op.owner),
            )
            db.execute(
                "UPDATE segments SET last_seen = ? WHERE rid = ? AND seq = ?",
                (op.t, rid, self._segment.get(rid, 0)),
            )
        elif isinstance(op, RunClosed):
            rid = self._rid(db, op.run_id)
            db.execute(
                "UPDATE runs SET status = ?, ended_at = ?, lease_owner = NULL, lease_pid = NULL,"
                " lease_host = NULL, lease_until = NULL WHERE rid = ?",
                (op.status, op.ended_at, rid),
            )
            wall = op.wall_s if op.wall_s >= 0 else None
            rss = op.peak_rss_mb if op.peak_rss_mb >= 0 else None
            db.execute(
                "UPDATE segments SET last_seen = ?, wall_s = ?, peak_rss_mb = ? "
                "WHERE rid = ? AND seq = ?",
                (op.ended_at, wall, rss, rid, self._segment.get(rid, 0)),
            )
        elif isinstance(op, Sampled):
            db.execute(
                "INSERT OR REPLACE INTO samples VALUES (?, ?, ?, ?, ?, ?)",
                (
                    self._rid(db, op.run_id),
                    op.t,
                    op.in_flight,
                    op.limit_now,
                    op.rpm_used,
                    op.tpm_used,
                ),
            )

    # -- reading ------------------------------------------------------------------------------

    async def results(self, run_id: str, tasks: Sequence[Task] | None = None) -> list[Result]:
        return await self._read(lambda db: queries.load_results(db, run_id, tasks))

    async def sink_position(self, run_id: str, sink: str) -> int:
        return await self._read(lambda db: queries.sink_position(db, run_id, sink))

    async def run_info(self, run_id: str, counts: bool = True) -> dict[str, Any] | None:
        return await self._read(lambda db: queries.run_info(db, run_id, counts))

    async def snapshot(self, run_id: str) -> RunSnapshot | None:
        return await self._read(lambda db: queries.load_snapshot(db, run_id))

    async def open_run(
        self, run_id: str, keep: Collection[str], bucket_log: float
    ) -> OpenRun | None:
        return await self._read(lambda db: load_open_run(db, run_id, keep, bucket_log))

    async def claim(self, run_id: str, lease: Lease) -> None:
        await self._on_writer(lambda db: queries.claim(db, run_id, lease))

    async def cancel_requests(self, run_ids: Sequence[str]) -> dict[str, str]:
        return await self._read(lambda db: queries.cancel_requests(db, run_ids))

    async def cache_get(self, keys: Sequence[bytes], newer_than: float) -> dict[bytes, Any]:
        return await self._read(lambda db: queries.cache_lookup(db, keys, newer_than))


def _lease_values(owner: str | None) -> tuple[Any, ...]:
    if owner is None:
        return (None, None, None, None)
    return (owner, os.getpid(), queries.HOST, time.time() + queries.LEASE_S)


def _result_row(rid: int, op: ResultRecorded, now: float) -> tuple[Any, ...]:
    r = op.result
    err = r.error
    return (
        rid,
        op.n,
        r.state,
        r.text,
        None if r.data is None else _dumps(r.data),
        r.finish_reason,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.attempts,
        r.latency_s,
        None if err is None else _dumps(err.as_dict()),
        op.duration,
        now,
        1 if op.cache == CACHE_HIT else 0,
        op.cache_key,
        op.request_hash,
    )


def _cache_row(op: ResultRecorded, now: float) -> tuple[Any, ...]:
    r = op.result
    return (
        op.cache_key,
        now,
        r.text,
        None if r.data is None else _dumps(r.data),
        r.finish_reason,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.latency_s,
    )
