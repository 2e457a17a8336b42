"""One account's budget shared by the runs on one machine (issue 10).

Two `fanout batch` processes that call the same provider + base URL with the same key draw
on one budget at the provider: each pacing itself at the account's whole RPM sends twice
what the account admits, and each learning a rate alone learns a share it keeps after the
other ended. So the processes meet in a small SQLite file beside the run store
(`accounts.db`, WAL): each holds a lease per account and model, renewed every `SYNC_S`
while it runs, saying whether it has calls to make and the rate its calls were admitted at.
From the live leases each process takes its share: the account's budget (configured, or
stated by the provider's rate headers) divided among the processes that have calls to make,
and, when they learn the rate from 429s (no budget known), the account's learned rate divided
the same way. That rate is one figure (`rate`) that all of them follow and move together: a
cut by any sets it (measured against what all were admitted at), each one's climb adds to
it, and each takes its share of it at every sync. Learned each on its own, the rates did not
converge: the process that started first took the budget in slow start and kept up to three
times its share, since each climbs in proportion to its own successes. A process
that ends removes its lease; one that dies (SIGKILL) stops renewing it, and it expires after
`LEASE_S`: the others take its share at their next sync (a live one that stalls keeps its
lease for `STALLED_S` more).

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
#: a lease not renewed for this long belongs to a process that died...
LEASE_S = 2.0
#: ...unless that process is still alive (this machine's): then it is stalled (its first
#: call held up for seconds on a loaded machine renews nothing), and its lease holds this
#: much longer. Dropped at once, its share went to the first process to get an answer,
#: which saw itself alone and sent its whole concurrency into the account's budget
STALLED_S = 15.0
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
CREATE TABLE IF NOT EXISTS rate (
    account TEXT PRIMARY KEY,
    total REAL NOT NULL,
    ceiling REAL,
    cuts INTEGER NOT NULL,
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
    #: the rate the account admitted at its last cut (calls/s); None while in slow start
    ceiling_total: float | None = None
    #: how many cuts the account's rate has had: a new one says calls sent before it are old
    cuts: int = 0


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


def _alive(pid: int) -> bool:
    """Whether a process of this machine has this pid (one of another user's included)."""
    if os.name == "nt" or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # (EPERM: it exists)
        return True
    return True


class Lease:
    """One process's lease on one account+model. `sync` renews it and reads the others';
    `release` removes it (when its engine closes, else at exit). A file that cannot be used
    (read-only, locked too long) makes the process run alone on its own budget, never fail."""

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
        self,
        *,
        demand: bool,
        admitted: float | None,
        learned: float | None = None,
        ceiling: float | None = None,
        grow: float | None = None,
        cut: bool = False,
        seed: float | None = None,
        seen: int = -1,
    ) -> Share | None:
        """Renew this lease (with whether this process has calls to make and the rate its
        calls were admitted at lately) and read the live ones and the account's rate. That
        rate (calls/s, all processes together) is one figure that every process sharing it
        follows (each its share) and moves: `learned` sets it (at a `cut`, or the rate of
        a process alone; `ceiling` with it: the rate admitted at the cut, None in slow
        start), `grow` adds what this process's pace moved since it last took its share
        (its successes' climb), or `seed` is recorded when none is. A cut is measured
        against what all the processes were admitted at (a process's own count, times
        the holders, counts its luck too), and one made before this process saw the last
        (`seen`: the cut count it knew) lowers the rate, never raises it. None when the file
        cannot be used."""
        if self.broken is not None:
            return None
        now = time.time()
        try:
            db = self._open()
            db.execute("BEGIN IMMEDIATE")
            try:
                expired = db.execute(
                    "SELECT holder, pid, expires FROM leases WHERE account = ? AND expires < ?",
                    (self.key, now),
                ).fetchall()
                for holder, pid, expires in expired:
                    if expires < now - STALLED_S or not _alive(int(pid)):
                        db.execute(
                            "DELETE FROM leases WHERE account = ? AND holder = ?",
                            (self.key, holder),
                        )
                db.execute(
                    "INSERT INTO leases (account, holder, pid, expires, demand, pace) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, holder) DO UPDATE SET "
                    "expires = excluded.expires, demand = excluded.demand, pace = excluded.pace",
                    (self.key, self.holder, os.getpid(), now + LEASE_S, int(demand), admitted),
                )
                rows = db.execute(
                    "SELECT pace FROM leases WHERE account = ? AND demand = 1", (self.key,)
                ).fetchall()
                holders = len(rows)
                row = db.execute(
                    "SELECT total, ceiling, cuts FROM rate WHERE account = ? AND updated > ?",
                    (self.key, now - LEARNED_TTL_S),
                ).fetchone()
                total: float | None = None if row is None else float(row[0])
                ceil: float | None = None if row is None or row[1] is None else float(row[1])
                cuts = 0 if row is None else int(row[2])
                write = True
                if learned is not None and cut and holders > 1:
                    known = sum(float(a) for (a,) in rows if a is not None)
                    basis = ceiling or learned
                    if 0.0 < known < basis:  # (a process that just began counts none yet)
                        learned, ceiling = learned * known / basis, ceiling and known
                    if total is not None and cuts > seen:
                        learned = min(learned, total)
                        ceiling = ceiling and min(ceiling, ceil or ceiling)
                if learned is not None:
                    # (a rough cut knows no ceiling: the one learned before still holds)
                    total, ceil, cuts = learned, ceiling if ceiling else ceil, cuts + cut
                elif grow is not None and total is not None:
                    # (a climb made before the last cut was seen is the cut's to undo)
                    total = max(total + (grow if cuts <= seen else 0.0), 1e-3)
                elif grow is not None and seed is not None:  # the first to pace: a guess
                    total, ceil = seed, None
                else:
                    write = False
                if write and total is not None:
                    db.execute(
                        "INSERT INTO rate (account, total, ceiling, cuts, updated) "
                        "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account) DO UPDATE SET "
                        "total = excluded.total, ceiling = excluded.ceiling, "
                        "cuts = excluded.cuts, updated = excluded.updated",
                        (self.key, total, ceil, cuts, now),
                    )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:  # SQLite rolls back by itself on a full disk
                    db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as e:
            self.broken = f"{self.path}: {e}"
            self._close()
            return None
        holders = int(holders)
        changed = holders != self.holders
        self.holders = holders
        return Share(holders, total, changed, ceil, cuts)

    def release(self) -> None:
        """Remove this lease: the others take its share at their next sync. (A later sync
        takes it again.)"""
        if self._atexit:
            atexit.unregister(self.release)
            self._atexit = False
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
