"""Where the time went: a task's spans turned into its breakdown, and a run's shares.

A task's spans (the store's `spans` table, engine/spans.py) never overlap and cover it from
submitted to its final state, so its breakdown, seconds per category, sums to its wall
time. `run` spans (attempts) are `running`; every other kind is its own category. A run's
shares are each category's part of the total task-time (the sum of its tasks' walls).

`load_spans` reads them from a store file; it returns nothing for a file written before
spans were kept (the report then says so and shows what `attempts` hold).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: the categories of a breakdown, in the order a report shows them
CATEGORIES = (
    "queued",
    "deps",
    "lane",
    "rpm",
    "tpm",
    "retry_after",
    "circuit",
    "budget",
    "backoff",
    "running",
)
LABELS = {
    "queued": "queued (waiting for a worker)",
    "deps": "waiting on dependencies",
    "lane": "waiting for a lane slot",
    "rpm": "rate-limited: RPM",
    "tpm": "rate-limited: TPM",
    "retry_after": "rate-limited: Retry-After",
    "circuit": "provider down (circuit open)",
    "budget": "parked by the cost cap",
    "backoff": "backing off between attempts",
    "running": "running (attempts)",
}


@dataclass(slots=True)
class SpanRow:
    """One span as stored: times in unix seconds."""

    kind: str
    t0: float
    t1: float
    attempt: int | None = None
    detail: str | None = None


@dataclass(slots=True)
class Breakdown:
    """One task's time: seconds per category (summing to `wall_s`), from `start` to `end`."""

    seconds: dict[str, float] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    attempts: int = 0

    @property
    def wall_s(self) -> float:
        """The time its spans cover (from submitted to its final state; a resumed task's
        time while no process ran it is not in it)."""
        return sum(self.seconds.values())


def category(kind: str) -> str:
    return "running" if kind == "run" else kind


def task_breakdown(spans: Iterable[SpanRow]) -> Breakdown:
    """A task's breakdown from its spans (in any order)."""
    out = Breakdown()
    first = True
    for s in spans:
        c = category(s.kind)
        out.seconds[c] = out.seconds.get(c, 0.0) + (s.t1 - s.t0)
        if first or s.t0 < out.start:
            out.start = s.t0
        if first or s.t1 > out.end:
            out.end = s.t1
        first = False
        if s.kind == "run":
            out.attempts += 1
    return out


def run_shares(breakdowns: Iterable[Breakdown]) -> dict[str, float]:
    """Each category's share of the run's total task-time (0..1, summing to 1), in the
    order of `CATEGORIES`; empty when no task took any time."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for b in breakdowns:
        for c, s in b.seconds.items():
            totals[c] = totals.get(c, 0.0) + s
    whole = sum(totals.values())
    if whole <= 0:
        return {}
    return {c: s / whole for c, s in totals.items()}


def longest_queue(spans: Iterable[SpanRow], kinds: Sequence[str]) -> int:
    """The most spans of `kinds` open at one time (tasks waiting at once)."""
    edges: list[tuple[float, int]] = []
    for s in spans:
        if s.kind in kinds and s.t1 > s.t0:
            edges.append((s.t0, 1))
            edges.append((s.t1, -1))
    edges.sort()  # at one instant an end (-1) comes before a start (+1)
    most = now = 0
    for _, d in edges:
        now += d
        most = max(most, now)
    return most


def has_spans(db: sqlite3.Connection) -> bool:
    row = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'spans'")
    return row.fetchone() is not None


def load_spans(db: sqlite3.Connection, rid: int) -> dict[int, list[SpanRow]]:
    """Task number -> its spans, in order; empty for a store without spans."""
    if not has_spans(db):
        return {}
    out: dict[int, list[SpanRow]] = {}
    rows = db.execute(
        "SELECT n, kind, t0, t1, attempt, detail FROM spans WHERE rid = ? ORDER BY n, seq", (rid,)
    )
    for n, kind, t0, t1, attempt, detail in rows:
        out.setdefault(n, []).append(SpanRow(kind, t0, t1, attempt, detail))
    return out


def breakdowns(spans: Mapping[int, list[SpanRow]]) -> dict[int, Breakdown]:
    return {n: task_breakdown(s) for n, s in spans.items()}
