"""One account's budget shared by the runs on one machine (issue 10).

Two `fanout batch` processes that call the same provider + base URL with the same key draw
on one budget at the provider: each pacing itself at the account's whole RPM sends twice
what the account admits, and each learning a rate alone learns a share it keeps after the
other ended. So the processes meet in a small SQLite file beside the run store
(`accounts.db`, WAL): each holds a lease per account and model, renewed every `SYNC_S`
while it runs, saying whether it has calls to make and the request rate it has learned.
From the live leases each process takes its share: the account's budget (configured, or
stated by the provider's rate headers) divided among the processes that have calls to make,
and, when it learns the rate, the account's learned rate divided the same way. A process
that ends removes its lease; one that dies (SIGKILL) stops renewing it, and it expires after
`LEASE_S`: the others take its share at their next sync.

The hot path never touches SQLite: the meter syncs at most once per `SYNC_S` (a few
hundred microseconds each), and between syncs it paces with the share it holds. Accounts are
named by a hash of provider type, base URL and key (`account_id`), never by the key.
Across machines this cannot coordinate: there the service or Ray backend is the answer.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

FILE_NAME = "accounts.db"
#: a lease not renewed for this long belongs to a process that died
LEASE_S = 2.0
#: how often a process renews its lease and takes its share anew
SYNC_S = 0.25
BUSY_TIMEOUT_S = 2.0
#: a learned rate older than this says nothing of the account now (a run of yesterday)
LEARNED_TTL_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS leases (
    account TEXT NOT NULL,
    holder TEXT NOT NULL,
    pid INTEGER NOT NULL,
    expires REAL NOT NULL,
    demand INTEGER NOT NULL,
    pace REAL,
    PRIMARY KEY (account, holder)
);
CREATE TABLE IF NOT EXISTS learned (
    account TEXT PRIMARY KEY,
    pace_total REAL NOT NULL,
    updated REAL NOT NULL
);
"""


def account_id(kind: str, base_url: str | None, key: str | None) -> str:
    """A stable name for provider type + base URL + key that does not reveal the key."""
    text = "\0".join((kind, (base_url or "").rstrip("/"), key or ""))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:24]


@dataclass(slots=True, frozen=True)
class Share:
    """What one sync tells a process."""

    holders: int  # processes with calls to make, this one included when it has some
    pace_total: float | None  # the account's learned request rate (calls/s), if known
    changed: bool  # whether `holders` differs from the last sync


class SharedAccount:
    """This process's view of one account in the coordination file: `lease(model)` gives
    the handle a meter syncs through. Cheap to make; the file is opened on first sync."""

    def __init__(self, path: Path, account: str) -> None:
        self.path = path
        self.account = account

    def lease(self, model: str) -> Lease:
        return Lease(self.path, f"{self.account}:{model}")

    def __repr__(self) -> str:
        return f"SharedAccount({str(self.path)!r}, {self.account!r})"


class Lease:
    """One process's lease on one account+model. `sync` renews it and reads the others';
    `release` removes it (also at exit). A file that cannot be used (read-only, locked too
    long) makes the process run alone on its own budget, never fail."""

    def __init__(self, path: Path, key: str) -> None:
        self.path = path
        self.key = key
        self.holder = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.holders = 0
        self.broken: str | None = None  # why the file could not be used, once it failed
        self._db: sqlite3.Connection | None = None
        self._atexit = False

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            self._db = db
            if not self._atexit:
                atexit.register(self.release)
                self._atexit = True
        return self._db

    def sync(
        self, *, demand: bool, pace: float | None, learned: float | None = None
    ) -> Share | None:
        """Renew this lease (with whether this process has calls to make and the rate it
        paces at) and read the live ones. `learned`: a rate this process has just learned
        for the whole account (calls/s), to record. None when the file cannot be used."""
        if self.broken is not None:
            return None
        now = time.time()
        try:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("DELETE FROM leases WHERE account = ? AND expires < ?", (self.key, now))
                db.execute(
                    "INSERT INTO leases (account, holder, pid, expires, demand, pace) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, holder) DO UPDATE SET "
                    "expires = excluded.expires, demand = excluded.demand, pace = excluded.pace",
                    (self.key, self.holder, os.getpid(), now + LEASE_S, int(demand), pace),
                )
                rows = db.execute(
                    "SELECT demand, pace FROM leases WHERE account = ? AND demand = 1",
                    (self.key,),
                ).fetchall()
                holders = len(rows)
                paces = [float(p) for _, p in rows if p is not None]
                if learned is not None:
                    total: float | None = learned
                elif holders and len(paces) == holders and holders == self.holders:
                    total = sum(paces)  # everyone paces, nobody came or went: keep it current
                else:
                    total = None
                if total is not None:
                    db.execute(
                        "INSERT INTO learned (account, pace_total, updated) VALUES (?, ?, ?) "
                        "ON CONFLICT (account) DO UPDATE SET pace_total = excluded.pace_total, "
                        "updated = excluded.updated",
                        (self.key, total, now),
                    )
                else:
                    row = db.execute(
                        "SELECT pace_total FROM learned WHERE account = ? AND updated > ?",
                        (self.key, now - LEARNED_TTL_S),
                    ).fetchone()
                    total = None if row is None else float(row[0])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as e:
            self.broken = f"{self.path}: {e}"
            self._close()
            return None
        changed = holders != self.holders
        self.holders = holders
        return Share(holders, total, changed)

    def release(self) -> None:
        """Remove this lease: the others take its share at their next sync."""
        if self._db is None:
            return
        with contextlib.suppress(sqlite3.Error):
            self._db.execute(
                "DELETE FROM leases WHERE account = ? AND holder = ?", (self.key, self.holder)
            )
        self._close()

    def _close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
