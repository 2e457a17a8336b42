"""What only the server's running engine knows: lane and provider limits, the limiter's
learned rate and pauses, live settings; and the reader threads the store is read on.

Reads of the store happen on `Reader` threads (each with its own SQLite connection) so a
big query never holds up the event loop the engine shares with the service.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from fanout.engine.engine import Engine
from fanout.engine.limits import DEFAULT_BURST_S, Gcra
from fanout.errors import ConfigError
from fanout.store.sqlite import connect, open_store_file

T = TypeVar("T")


class Reader:
    """Runs read-only store queries on its own threads, one connection per thread."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.path = open_store_file(path)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="fanout-service-reader")
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path)
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._db(), *args, **kwargs))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for db in self._conns:
                db.close()
            self._conns.clear()


def _wall(loop_t: float) -> float:
    """A loop-clock time as unix time."""
    return loop_t - asyncio.get_running_loop().time() + time.time()


def limiter_rows(engine: Engine, sample: tuple[Any, ...] | None) -> list[dict[str, Any]]:
    """One row per provider+model meter: budgets, use (the run's latest sample), the learned
    rate, the adaptive concurrency, a Retry-After pause."""
    now = asyncio.get_running_loop().time()
    rows = []
    for key, m in sorted(engine.provider_meters.items()):
        rows.append(
            {
                "provider": key,
                "rpm_used": None if sample is None else sample[0],
                "rpm_budget": None if m.rpm is None else round(60.0 / m.rpm.interval, 3),
                "tpm_used": None if sample is None else sample[1],
                "tpm_budget": None if m.tpm is None else round(60.0 / m.tpm.interval, 3),
                "learned_rps": None if m.pace_rate is None else round(m.pace_rate, 3),
                "concurrency": round(m.limit, 2),
                "in_flight": m.inflight,
                "retry_after_until": _wall(m.paused_until) if m.paused_until > now else None,
            }
        )
    return rows


def settings_now(engine: Engine) -> dict[str, Any]:
    s = engine.settings
    return {
        "concurrency": min([s.concurrency, *(int(m.cap) for m in engine.provider_meters.values())]),
        "max_concurrency": s.concurrency,
        "lanes": dict(s.lanes),
        "providers": {
            key: {
                "rpm": None if m.rpm is None else round(60.0 / m.rpm.interval, 3),
                "tpm": None if m.tpm is None else round(60.0 / m.tpm.interval, 3),
            }
            for key, m in sorted(engine.provider_meters.items())
        },
    }


def change_settings(engine: Engine, body: dict[str, Any]) -> dict[str, Any]:
    """Apply what can change while runs go: the concurrency (up to the workers the engine
    started with) and each provider's RPM/TPM. Checked whole before anything changes."""
    s = engine.settings
    conc = body.get("concurrency")
    if conc is not None and (
        isinstance(conc, bool) or not isinstance(conc, int) or not 1 <= conc <= s.concurrency
    ):
        raise ConfigError(
            f"concurrency {conc!r}: give a whole number from 1 to {s.concurrency} (the server's "
            "--concurrency; restart it with a higher one for more)"
        )
    lanes = body.get("lanes") or {}
    if lanes and lanes != {k: v for k, v in s.lanes.items() if k in lanes}:
        raise ConfigError(
            "lane limits are fixed while the server runs: set them in fanout.yaml (lanes:) "
            "and restart it"
        )
    providers = body.get("providers") or {}
    if not isinstance(providers, dict):
        raise ConfigError('providers: give {"name": {"rpm": N, "tpm": N}}')
    meters = engine.provider_meters
    for name, lim in providers.items():
        if name not in meters:
            known = ", ".join(sorted(meters)) or "none yet (no call made)"
            raise ConfigError(f"providers: no provider {name!r} in use; in use: {known}")
        if not isinstance(lim, dict) or set(lim) - {"rpm", "tpm"}:
            raise ConfigError(f'providers.{name}: give {{"rpm": N, "tpm": N}}')
        for k, v in lim.items():
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or v <= 0):
                raise ConfigError(f"providers.{name}.{k} {v!r}: must be a positive number")
    if conc is not None:
        for m in meters.values():
            m.cap = float(conc)
            m.limit = min(m.limit, m.cap)
    for name, lim in providers.items():
        m = meters[name]
        if lim.get("rpm") is not None:
            if m.rpm is None:
                m.rpm = Gcra(float(lim["rpm"]), DEFAULT_BURST_S)
            else:
                m.rpm.retune(float(lim["rpm"]), m.rpm.tau)
        if lim.get("tpm") is not None:
            if m.tpm is None:
                m.tpm = Gcra(float(lim["tpm"]), DEFAULT_BURST_S)
            else:
                m.tpm.retune(float(lim["tpm"]), m.tpm.tau)
    return settings_now(engine)


def latest_sample(db: sqlite3.Connection, run_id: str) -> tuple[Any, ...] | None:
    row = db.execute(
        "SELECT s.rpm_used, s.tpm_used, s.in_flight, s.limit_now FROM samples s "
        "JOIN runs r ON r.rid = s.rid WHERE r.id = ? ORDER BY s.t DESC LIMIT 1",
        (run_id,),
    ).fetchone()
    return None if row is None else tuple(row)
