"""A run's timeline as plain data, read from the run store: what `--html`, `--png` and
`--trace` draw.

Attempts come from `attempts` (every run has them) and are packed into concurrency slots:
greedy interval partitioning, each attempt taking the lowest free slot, so no two attempts
of a slot overlap and the number of slots is the run's peak concurrency. Waits (`deps`,
`queued`, `lane`, `rpm`, `tpm`, `retry_after`, `circuit`, `budget`, `backoff`) come from the
`spans` table and the limiter's series (`limit_now`, `rpm_used`, `tpm_used`) from `samples`,
when the store has them; an older store has only `attempts`, and the timeline then has
no waits and no samples (the in-flight count is always derived from the attempts).

Times are seconds since the run's first recorded instant (`origin`, unix seconds).
"""

from __future__ import annotations

import heapq
import json
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from fanout.report.breakdown import CATEGORIES

#: the wait kinds of the spans interface, in the order pictures list them (dependencies
#: first: they come first in a task's life)
WAIT_KINDS: tuple[str, ...] = ("deps", *(c for c in CATEGORIES if c not in ("deps", "running")))


@dataclass(slots=True)
class Bar:
    """One attempt on its slot: `outcome` is None while it runs (or when it was cut off)."""

    slot: int
    t0: float
    t1: float
    n: int
    attempt: int
    lane: str
    agent: str
    key: str
    outcome: str | None
    error_class: str | None
    tokens: int | None
    first_token: float | None = None
    #: what went wrong within the class: rate_limited, server_error, timeout, ...
    error_kind: str | None = None


@dataclass(slots=True)
class Wait:
    """A task waiting (one span of the `spans` table), on its own packed row."""

    row: int
    t0: float
    t1: float
    n: int
    kind: str


@dataclass(slots=True)
class Sample:
    t: float
    in_flight: int | None
    limit_now: int | None
    rpm_used: float | None
    tpm_used: float | None


@dataclass
class Timeline:
    run_id: str
    kind: str
    origin: float
    end: float
    slots: int
    bars: list[Bar]
    waits: list[Wait] = field(default_factory=list)
    wait_rows: int = 0
    #: (task n that must finish first, task n that waits for it)
    deps: list[tuple[int, int]] = field(default_factory=list)
    #: the in-flight count as change points (t, count), from the attempts
    in_flight: list[tuple[float, int]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    #: whether the store had the spans table (a run before it has no waits to show)
    has_spans: bool = False

    @property
    def lanes(self) -> list[str]:
        return sorted({b.lane for b in self.bars})

    @property
    def agents(self) -> list[str]:
        return sorted({b.agent for b in self.bars})


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return row.fetchone() is not None


def _has_column(db: sqlite3.Connection, table: str, column: str) -> bool:
    return any(r[1] == column for r in db.execute(f"PRAGMA table_info({table})"))


def pack(intervals: Iterable[tuple[float, float]]) -> tuple[list[int], int]:
    """The row of each (t0, t1) interval so that no two of a row overlap, the lowest free
    row first; and the number of rows. Intervals touching end-to-start share a row."""
    items = sorted(enumerate(intervals), key=lambda it: (it[1][0], it[1][1]))
    rows = [0] * len(items)
    busy: list[tuple[float, int]] = []  # (end, row) of rows in use
    free: list[int] = []
    count = 0
    for i, (t0, t1) in items:
        while busy and busy[0][0] <= t0:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            row = heapq.heappop(free)
        else:
            row, count = count, count + 1
        rows[i] = row
        heapq.heappush(busy, (t1, row))
    return rows, count


def step_counts(intervals: Iterable[tuple[float, float]]) -> list[tuple[float, int]]:
    """How many intervals are open, as change points (t, count) in time order."""
    edges: list[tuple[float, int]] = []
    for t0, t1 in intervals:
        edges.append((t0, 1))
        edges.append((t1, -1))
    edges.sort(key=lambda e: (e[0], e[1]))  # ends before starts at the same instant
    out: list[tuple[float, int]] = []
    level = 0
    for t, d in edges:
        level += d
        if out and out[-1][0] == t:
            out[-1] = (t, level)
        else:
            out.append((t, level))
    return out


def binned_max(points: Sequence[tuple[float, float]], end: float, bins: int) -> list[float]:
    """A step series (change points) as the highest level in each of `bins` equal bins of
    [0, end]: a peak shorter than a bin still shows, which a plain sample would miss."""
    out = [0.0] * bins
    if end <= 0 or not points:
        return out
    width = end / bins
    level = 0.0
    i = 0
    for b in range(bins):
        hi = (b + 1) * width
        peak = level
        while i < len(points) and points[i][0] < hi:
            level = points[i][1]
            peak = max(peak, level)
            i += 1
        out[b] = peak
    return out


def _keys(
    db: sqlite3.Connection, rid: int
) -> tuple[dict[int, tuple[str, str, str]], list[tuple[int, list[str]]]]:
    """n -> (key, lane, agent), and the (n, deps) of tasks that have dependencies."""
    from fanout.store.spec import spec_key

    info: dict[int, tuple[str, str, str]] = {}
    with_deps: list[tuple[int, list[str]]] = []
    for n, key, lane, agent, spec in db.execute(
        "SELECT n, key, lane, agent, spec FROM tasks WHERE rid = ?", (rid,)
    ):
        if key is None:
            try:
                key = spec_key(spec) if spec else f"#{n}"
            except Exception:  # a spec this version cannot read still has a row to show
                key = f"#{n}"
        info[n] = (key, lane or "default", agent or "-")
        if spec and '"deps"' in spec:
            deps = json.loads(spec).get("deps") or []
            with_deps.append((n, [str(d) for d in deps]))
    return info, with_deps


def load_timeline(db: sqlite3.Connection, run_id: str) -> Timeline | None:
    """The timeline of run `run_id`, or None when the store has no such run."""
    row = db.execute("SELECT rid, kind, created_at FROM runs WHERE id = ?", (run_id,)).fetchone()
    if row is None:
        return None
    rid, kind, created = int(row[0]), str(row[1]), float(row[2])
    info, with_deps = _keys(db, rid)
    first_token = "first_token_at" if _has_column(db, "attempts", "first_token_at") else "NULL"
    attempts = db.execute(
        "SELECT n, attempt, started_at, duration, outcome, error_class, tokens, "
        f"{first_token}, error_kind "
        "FROM attempts WHERE rid = ? AND started_at IS NOT NULL ORDER BY started_at",
        (rid,),
    ).fetchall()
    has_spans = _has_table(db, "spans")
    spans = (
        db.execute(
            "SELECT n, kind, t0, t1 FROM spans WHERE rid = ? AND kind != 'run' ORDER BY t0",
            (rid,),
        ).fetchall()
        if has_spans
        else []
    )
    samples = (
        db.execute(
            "SELECT t, in_flight, limit_now, rpm_used, tpm_used FROM samples WHERE rid = ? "
            "ORDER BY t",
            (rid,),
        ).fetchall()
        if _has_table(db, "samples")
        else []
    )
    ended = db.execute("SELECT ended_at FROM runs WHERE rid = ?", (rid,)).fetchone()[0]
    starts = [a[2] for a in attempts] + [s[2] for s in spans] + [s[0] for s in samples]
    origin = min(starts) if starts else created
    # an attempt with no duration was cut off (crash) or still runs: drawn up to the run's
    # last known instant, with no outcome
    last = max(
        [a[2] + (a[3] or 0.0) for a in attempts] + [s[3] for s in spans] + [s[0] for s in samples],
        default=origin,
    )
    if ended is not None:
        last = max(last, float(ended))
    spans_iv = [
        (a[2] - origin, (a[2] + a[3] if a[3] is not None else last) - origin) for a in attempts
    ]
    rows, slots = pack(spans_iv)
    bars = []
    for (n, attempt, _s, _d, outcome, error_class, tokens, ft, ekind), (t0, t1), slot in zip(
        attempts, spans_iv, rows, strict=True
    ):
        key, lane, agent = info.get(n, (f"#{n}", "default", "-"))
        bars.append(
            Bar(
                slot,
                t0,
                t1,
                n,
                attempt,
                lane,
                agent,
                key,
                outcome,
                error_class,
                tokens,
                None if ft is None else ft - origin,
                ekind,
            )
        )
    wait_iv = [(s[2] - origin, s[3] - origin) for s in spans]
    wrows, wait_rows = pack(wait_iv)
    waits = [
        Wait(r, t0, t1, s[0], s[1]) for s, (t0, t1), r in zip(spans, wait_iv, wrows, strict=True)
    ]
    by_key = {k: n for n, (k, _l, _a) in info.items()}
    deps = [(by_key[d], n) for n, ds in with_deps for d in ds if d in by_key]
    return Timeline(
        run_id=run_id,
        kind=kind,
        origin=origin,
        end=last - origin,
        slots=slots,
        bars=bars,
        waits=waits,
        wait_rows=wait_rows,
        deps=deps,
        in_flight=step_counts(spans_iv),
        samples=[Sample(s[0] - origin, s[1], s[2], s[3], s[4]) for s in samples],
        has_spans=has_spans,
    )


def waits_fit(tl: Timeline, max_waits: int) -> bool:
    """Whether the waits are drawn one by one below the slots: when there are at most
    `max_waits` of them and their rows are no more than the slots' (or 32). A run that
    queues thousands of tasks at once would otherwise bury its Gantt under a band of
    queued rows; its waits are then shown by the waiting-by-cause chart alone."""
    return 0 < len(tl.waits) <= max_waits and tl.wait_rows <= max(tl.slots, 32)


def waiting_counts(tl: Timeline) -> dict[str, list[tuple[float, int]]]:
    """For each wait kind that occurs: how many tasks wait that way, as change points."""
    by_kind: dict[str, list[tuple[float, float]]] = {}
    for w in tl.waits:
        by_kind.setdefault(w.kind, []).append((w.t0, w.t1))
    order = {k: i for i, k in enumerate(WAIT_KINDS)}
    return {
        k: step_counts(v) for k, v in sorted(by_kind.items(), key=lambda kv: order.get(kv[0], 99))
    }
