"""The store's schema, as ordered named migrations (like simonw/llm's `m001_initial`, ...).

Each migration is a function of a connection; `migrate` applies the ones not yet recorded in
`_migrations`, in order, each in its own transaction with its record, so a crash mid-way
leaves the file at a migration boundary. Never edit a migration that has shipped: add one.

Tables (child tables are keyed by the run's integer `rid`, WITHOUT ROWID, so a task costs
its few rows and no separate index):

- `runs`: one per run: id, kind, status, config snapshot (JSON), settings (what results
  depend on: providers, default model, blueprint versions), the lease (owner, pid, host,
  until) and a cancellation asked for from another process.
- `segments`: one per process that ran the run (the first, then each resume): start, last
  heartbeat, wall time and concurrency; the report's wall time is their sum.
- `tasks`: (rid, n) -> key, lane, agent, spec (JSON to rebuild the task on resume). The key
  is NULL when it was derived (not given) and the spec is kept: derived again from the spec.
- `attempts`: (rid, n, attempt) -> start, duration, outcome (done | failed | cancelled |
  error | interrupted; NULL while running), error class and kind, tokens.
- `results`: (rid, n) -> terminal state, text, data, usage, latency, error, the cache key
  and the sha256 of the request body.
- `acks`: (rid, sink) -> position.
- `cache`: key (sha256) -> an answer and when it was stored; since m004 a rowid table (rows
  in arrival order) with a unique index on the key.
- `spans` (m002): (rid, n, seq) -> kind, t0, t1 (unix), attempt, detail: where each task's
  time went, from submitted to its final state (engine/spans.py names the kinds); an
  attempt's `run` span starts at its `attempts.started_at`, and `attempts.first_token_at`
  is when a streamed attempt's first chunk came.
- `samples` (m002): (rid, t) -> in flight, the concurrency allowed, RPM and TPM used: about
  once a second while the run goes. `segments.peak_rss_mb`: the process's peak memory.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable

from fanout.errors import ConfigError

Migration = Callable[[sqlite3.Connection], None]
log = logging.getLogger(__name__)


def m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE runs (
            rid INTEGER PRIMARY KEY,
            id TEXT NOT NULL UNIQUE,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            ended_at REAL,
            config TEXT NOT NULL,
            settings TEXT NOT NULL,
            total INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_pid INTEGER,
            lease_host TEXT,
            lease_until REAL,
            cancel_requested TEXT
        )"""
    )
    db.execute(
        """CREATE TABLE segments (
            rid INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            started_at REAL NOT NULL,
            last_seen REAL,
            wall_s REAL,
            concurrency INTEGER NOT NULL,
            PRIMARY KEY (rid, seq)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE tasks (
            rid INTEGER NOT NULL,
            n INTEGER NOT NULL,
            key TEXT,
            lane TEXT,
            agent TEXT,
            spec TEXT,
            PRIMARY KEY (rid, n)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE attempts (
            rid INTEGER NOT NULL,
            n INTEGER NOT NULL,
            attempt INTEGER NOT NULL,
            started_at REAL,
            duration REAL,
            outcome TEXT,
            error_class TEXT,
            error_kind TEXT,
            tokens INTEGER,
            PRIMARY KEY (rid, n, attempt)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE results (
            rid INTEGER NOT NULL,
            n INTEGER NOT NULL,
            state TEXT NOT NULL,
            text TEXT,
            data TEXT,
            finish_reason TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            attempts INTEGER NOT NULL,
            latency REAL NOT NULL,
            error TEXT,
            duration REAL NOT NULL,
            finished_at REAL NOT NULL,
            cached INTEGER NOT NULL,
            cache_key BLOB,
            request_hash BLOB,
            PRIMARY KEY (rid, n)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE acks (
            rid INTEGER NOT NULL,
            sink TEXT NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (rid, sink)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE cache (
            key BLOB PRIMARY KEY,
            created_at REAL NOT NULL,
            text TEXT,
            data TEXT,
            finish_reason TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            latency REAL NOT NULL
        ) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX runs_by_created ON runs (created_at)")


def m002_spans(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE spans (
            rid INTEGER NOT NULL,
            n INTEGER NOT NULL,
            seq INTEGER NOT NULL,
            kind TEXT NOT NULL,
            t0 REAL NOT NULL,
            t1 REAL NOT NULL,
            attempt INTEGER,
            detail TEXT,
            PRIMARY KEY (rid, n, seq)
        ) WITHOUT ROWID"""
    )
    db.execute(
        """CREATE TABLE samples (
            rid INTEGER NOT NULL,
            t REAL NOT NULL,
            in_flight INTEGER,
            limit_now INTEGER,
            rpm_used REAL,
            tpm_used REAL,
            PRIMARY KEY (rid, t)
        ) WITHOUT ROWID"""
    )
    db.execute("ALTER TABLE attempts ADD COLUMN first_token_at REAL")
    db.execute("ALTER TABLE segments ADD COLUMN peak_rss_mb REAL")


def m003_free_attempts(db: sqlite3.Connection) -> None:
    """`free`: an attempt that cost the task no attempt and the run no retry budget though
    it reached the provider (a 429 that named its wait while the provider admitted our other
    calls: `engine/workers.py`), so that a resume counts it as the run did. Calls that never
    reached the provider are told by their kind (`connection`) and are not marked. Few rows
    have it: a partial index finds them without a pass over a run's attempts."""
    db.execute("ALTER TABLE attempts ADD COLUMN free INTEGER NOT NULL DEFAULT 0")
    db.execute("CREATE INDEX attempts_free ON attempts (rid, n) WHERE free = 1")


#: how many cached answers m004 copies without a word (about a quarter of a second's work)
M004_SAY_ABOVE = 10_000


def m004_cache_in_arrival_order(db: sqlite3.Connection) -> None:
    """The cache as a rowid table with a unique index on its key, in place of a WITHOUT
    ROWID table keyed by it. A key is a sha256, so each new answer landed on a random leaf of
    a tree that holds the answers themselves (about 1 KB a row): past the page cache, every
    insert read and wrote a page of answers, and a 1,000,000-line run went 16 % slower per
    line than a 100,000-line one. Rows now append in arrival order; only the index (about
    45 bytes a key) takes random inserts (docs/benchmarks.md §20)."""
    db.execute(
        """CREATE TABLE cache_m004 (
            key BLOB NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            text TEXT,
            data TEXT,
            finish_reason TEXT,
            model TEXT,
            input_tokens INTEGER NOT NULL,
            output_tokens INTEGER NOT NULL,
            latency REAL NOT NULL
        )"""
    )
    (entries,) = db.execute("SELECT count(*) FROM cache").fetchone()
    if entries > M004_SAY_ABOVE:  # a long silent pause looks like a hang: say why
        path = _file_of(db)
        log.warning(
            "fanout: moving the %s answers cached in %s to the cache's new layout, once after"
            " an upgrade (about 25 s a million)",
            f"{entries:,}",
            path,
        )
    db.execute("INSERT INTO cache_m004 SELECT * FROM cache ORDER BY created_at")
    db.execute("DROP TABLE cache")
    db.execute("ALTER TABLE cache_m004 RENAME TO cache")


#: every migration, in order; the name is what `_migrations` records
MIGRATIONS: tuple[tuple[str, Migration], ...] = (
    ("m001_initial", m001_initial),
    ("m002_spans", m002_spans),
    ("m003_free_attempts", m003_free_attempts),
    ("m004_cache_in_arrival_order", m004_cache_in_arrival_order),
)


def migrate(db: sqlite3.Connection) -> list[str]:
    """Apply the migrations `db` lacks; returns their names. `db` must be in autocommit
    mode (isolation_level=None): each migration runs in its own IMMEDIATE transaction."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at REAL)")
    _refuse_newer(db)
    applied: list[str] = []
    for name, fn in MIGRATIONS:
        db.execute("BEGIN IMMEDIATE")
        try:
            # checked inside the write lock: another process may have just applied it
            if db.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                db.execute("COMMIT")
                continue
            fn(db)
            db.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on a full disk
                db.execute("ROLLBACK")
            raise
        applied.append(name)
    return applied


def _refuse_newer(db: sqlite3.Connection) -> None:
    """A file a newer fanout migrated has tables this version does not know: writing to it
    could break them (and that fanout's runs), so stop before touching anything."""
    known = {name for name, _ in MIGRATIONS}
    unknown = sorted(
        name for (name,) in db.execute("SELECT name FROM _migrations") if name not in known
    )
    if unknown:
        path = _file_of(db)
        raise ConfigError(
            f"the run store {path} was written by a newer fanout (schema {', '.join(unknown)}"
            " unknown to this version): upgrade fanout, or set FANOUT_HOME to another folder"
        )


def _file_of(db: sqlite3.Connection) -> str:
    """The file of `db`'s main database, for messages."""
    return next((row[2] for row in db.execute("PRAGMA database_list") if row[1] == "main"), "")
