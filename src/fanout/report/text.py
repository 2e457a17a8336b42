"""A run in words: the end-of-run summary, and what `fanout runs`, `fanout status` and
`fanout report` print, from the store.

`run_report` computes a stored run's metrics with the code `run.metrics()` uses
(`metrics_from_snapshot`), so the report of a run and the summary its process printed give
the same numbers; `where_time_went` adds what its spans tell (report/breakdown.py), its
cost and its peak memory.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from fanout.engine.budget import DEFAULT_PRICES, Price, Prices
from fanout.engine.metrics import metrics_from_snapshot
from fanout.errors import ConfigError
from fanout.report.breakdown import (
    CATEGORIES,
    LABELS,
    Breakdown,
    breakdowns,
    load_spans,
    longest_queue,
    run_shares,
)
from fanout.store.queries import load_snapshot, rid_of

SLOWEST_SHOWN = 5
#: what a task waiting in a lane's queue may be waiting for (ready, not running)
QUEUE_KINDS = ("queued", "lane", "rpm", "tpm", "retry_after", "circuit", "budget")


def fmt_s(s: float | None) -> str:
    """A duration for people: 850 ms, 12.5 s, 3.2 min."""
    if s is None:
        return "-"
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def when(t: float | None) -> str:
    """A unix time as local date and time."""
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def summary_lines(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The end-of-run summary as (label, value) rows."""
    rows = [
        (
            "tasks",
            f"{m['done']} done, {m['failed']} failed, {m['skipped']} skipped, "
            f"{m['cancelled']} cancelled (of {m['total']})",
        ),
        ("wall time", fmt_s(m["wall_s"])),
    ]
    cached, calls = m.get("cached", 0), m.get("attempts", 0)
    if cached:  # answers that cost no call: the figures below are over the real calls only
        made = f"{calls} call{'' if calls == 1 else 's'} made"
        rows.append(("from the cache", f"{cached} answered from the cache, {made}"))
    if calls:
        over = f" (over the {calls} calls made)" if cached else ""
        rows += [
            ("serial estimate", f"{fmt_s(m['serial_s'])} (sum of attempt durations)"),
            ("speedup", f"{m['speedup']:.2f}x" + over),
            ("utilisation", f"{m['utilisation'] * 100:.0f}% of the concurrency limit" + over),
            ("latency", f"p50 {fmt_s(m['p50_s'])}, p95 {fmt_s(m['p95_s'])}" + over),
        ]
    else:
        none = "- (no calls made)"
        rows += [("speedup", none), ("utilisation", none), ("latency", none)]
    rows += [
        ("retries", _counts(m["retries"], m["retries_by_kind"])),
        ("failures", _counts(m["failed"], m["failures_by_kind"])),
        ("tokens", f"{m['input_tokens']:,} in, {m['output_tokens']:,} out"),
    ]
    if "cost_usd" in m:
        cap = m.get("max_cost_usd")
        rows.append(("cost", f"${m['cost_usd']:.4f}" + (f" (cap ${cap:g})" if cap else "")))
    if m.get("cancel_reason"):
        rows.append(("cancelled", str(m["cancel_reason"])))
    return rows


def _counts(total: int, by_kind: dict[str, int]) -> str:
    if not by_kind:
        return str(total)
    return f"{total} (" + ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) + ")"


def run_report(db: sqlite3.Connection, run_id: str) -> dict[str, Any] | None:
    snap = load_snapshot(db, run_id)
    if snap is None:
        return None
    from fanout.store.overview import display_status

    m = metrics_from_snapshot(snap)
    m["status"] = display_status(snap.status, snap.lease)
    m["kind"] = snap.kind
    m["segments"] = len(snap.segments)
    return m


def report_lines(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (label, value) rows: the run summary, then latency per agent."""
    rows = [("run", f"{m['run_id']} ({m.get('kind', '-')}, {m['status']})")]
    priced = m.get("report_cost_usd") is not None  # (then its cost row replaces the summary's)
    rows += [r for r in summary_lines(m) if not (priced and r[0] == "cost")]
    if m.get("attempts"):
        rows.append(("throughput", f"{m['throughput_per_s']:.2f} tasks/s"))
    if m.get("report_cost_usd") is not None:
        rows.append(("cost", f"${m['report_cost_usd']:.4f} ({m['priced']})"))
    if m.get("peak_rss_mb") is not None:
        rows.append(("peak memory", f"{m['peak_rss_mb']:.0f} MB (the largest of its processes)"))
    if m.get("interrupted"):
        rows.append(("interrupted", f"{m['interrupted']} attempts (run again on resume)"))
    if m.get("segments", 1) > 1:
        rows.append(("segments", f"{m['segments']} (the first run and each resume)"))
    for agent, p50 in m.get("p50_by_agent", {}).items():
        p95 = m["p95_by_agent"][agent]
        rows.append((f"  {agent}", f"p50 {fmt_s(p50)}, p95 {fmt_s(p95)}"))
    rows += _where_rows(m)
    return rows


def _where_rows(m: dict[str, Any]) -> list[tuple[str, str]]:
    shares: dict[str, float] | None = m.get("breakdown")
    if shares is None:
        return [("where time went", "not recorded (a run from before spans were kept)")]
    if not shares:
        return []
    rows = [("where time went", f"shares of {fmt_s(m['task_time_s'])} of total task-time")]
    for c in CATEGORIES:
        if shares.get(c):
            rows.append((f"  {c}", f"{shares[c] * 100:5.1f}%  {LABELS[c]}"))
    for lane, info in m.get("lanes", {}).items():
        rows.append(
            (
                f"lane {lane}",
                f"busy {info['busy_share'] * 100:.0f}% of the run's slot-time, "
                f"longest queue {info['longest_queue']}",
            )
        )
    for i, t in enumerate(m.get("slowest", [])):
        parts = ", ".join(f"{c} {fmt_s(s)}" for c, s in t["seconds"].items())
        rows.append(("slowest" if i == 0 else "", f"{t['key']}  {fmt_s(t['wall_s'])}: {parts}"))
    return rows


def where_time_went(
    db: sqlite3.Connection,
    run_id: str,
    m: dict[str, Any],
    prices: dict[str, Price] | None = None,
) -> None:
    """Add to a run's report `m` what its spans say (the breakdown as shares of total
    task-time, per lane busy share and longest queue, the slowest tasks), its cost at
    `prices` (the shipped table when None) and its peak memory."""
    rid = rid_of(db, run_id)
    if rid is None:
        return
    table = Prices(prices if prices is not None else DEFAULT_PRICES)
    cost = 0.0
    unpriced: set[str] = set()
    for model, tin, tout in db.execute(
        "SELECT model, sum(input_tokens), sum(output_tokens) FROM results "
        "WHERE rid = ? AND cached = 0 GROUP BY model",
        (rid,),
    ):
        if (tin or tout) and model is not None and table.of(model) is None:
            unpriced.add(model)
        cost += table.cost(model or "", int(tin or 0), int(tout or 0))
    m["report_cost_usd"] = round(cost, 6)
    m["priced"] = (
        "at list prices per million tokens"
        if not unpriced
        else "no price known for " + ", ".join(sorted(unpriced))
    )
    peak = db.execute("SELECT max(peak_rss_mb) FROM segments WHERE rid = ?", (rid,)).fetchone()
    m["peak_rss_mb"] = None if peak is None or peak[0] is None else round(peak[0], 1)
    spans = load_spans(db, rid)
    if not spans and m.get("attempts"):
        m["breakdown"] = None  # a run from before spans were kept
        return
    per_task = breakdowns(spans)
    m["breakdown"] = {c: round(v, 4) for c, v in run_shares(per_task.values()).items()}
    m["task_time_s"] = round(sum(b.wall_s for b in per_task.values()), 4)
    keys = dict(db.execute("SELECT n, coalesce(key, '#' || n) FROM tasks WHERE rid = ?", (rid,)))
    m["slowest"] = [
        _slow(keys.get(n, f"#{n}"), b)
        for n, b in sorted(per_task.items(), key=lambda nb: -nb[1].wall_s)[:SLOWEST_SHOWN]
    ]
    lanes: dict[str, list[int]] = {}
    for n, lane in db.execute(
        "SELECT n, coalesce(lane, 'default') FROM tasks WHERE rid = ?", (rid,)
    ):
        lanes.setdefault(lane, []).append(n)
    slot_s = max(float(m.get("wall_s") or 0.0) * _concurrency(db, rid), 1e-9)
    m["lanes"] = {}
    for lane, ns in sorted(lanes.items()):
        rows = [s for n in ns for s in spans.get(n, ())]
        busy = sum(s.t1 - s.t0 for s in rows if s.kind == "run")
        m["lanes"][lane] = {
            "busy_share": round(busy / slot_s, 4),
            "longest_queue": longest_queue(rows, QUEUE_KINDS),
        }


def parse_price(value: str) -> tuple[str, Price]:
    """`MODEL=IN/OUT` (dollars per million tokens in and out) -> (model, price)."""
    model, eq, rest = value.partition("=")
    parts = rest.split("/")
    try:
        if not (eq and model.strip() and len(parts) == 2):
            raise ValueError(value)
        return model.strip(), Price(float(parts[0]), float(parts[1]))
    except (ValueError, ConfigError):
        raise ConfigError(
            f"--price {value!r}: use MODEL=IN/OUT, dollars per million tokens in and out, "
            "not negative (e.g. --price gpt-4o=2.5/10)"
        ) from None


def report_prices(table: dict[str, Price], overrides: list[str]) -> dict[str, Price]:
    """The shipped price table, then `table` (a config's `prices:`), then `--price`s."""
    out = {**DEFAULT_PRICES, **table}
    out.update(parse_price(v) for v in overrides)
    return out


def _slow(key: str, b: Breakdown) -> dict[str, Any]:
    parts = sorted(b.seconds.items(), key=lambda cs: -cs[1])
    return {
        "key": key,
        "wall_s": round(b.wall_s, 4),
        "attempts": b.attempts,
        "seconds": {c: round(s, 4) for c, s in parts if s > 0},
    }


def _concurrency(db: sqlite3.Connection, rid: int) -> int:
    row = db.execute(
        "SELECT concurrency FROM segments WHERE rid = ? ORDER BY seq DESC LIMIT 1", (rid,)
    ).fetchone()
    return max(1, int(row[0])) if row and row[0] else 1


def format_runs(rows: list[dict[str, Any]]) -> list[str]:
    head = f"{'run':<16} {'kind':<8} {'status':<11} {'done/total':>13} {'failed':>7}  "
    head += f"{'started':<19} {'wall':>9}"
    out = [head]
    for r in rows:
        done = f"{r['done']}/{r['total']}"
        out.append(
            f"{r['run_id']:<16} {r['kind']:<8} {r['status']:<11} {done:>13} {r['failed']:>7}  "
            f"{when(r['started']):<19} {fmt_s(r['wall_s']):>9}"
        )
    return out


def format_status(st: dict[str, Any]) -> list[str]:
    states = st["states"]
    order = ("done", "running", "waiting", "failed", "skipped", "cancelled")
    counts = ", ".join(f"{k} {states[k]}" for k in order if states.get(k))
    out = [
        f"run {st['run_id']} ({st['kind']}): {st['status']}",
        f"tasks: {counts or 'none'} (of {st['total']})",
    ]
    for lane, c in st["lanes"].items():
        lane_counts = ", ".join(f"{k} {c[k]}" for k in order if c.get(k))
        out.append(f"  lane {lane}: {lane_counts}")
    by_kind = ", ".join(f"{k} {v}" for k, v in sorted(st["retries_by_kind"].items()))
    out.append(f"retries: {st['retries']}" + (f" ({by_kind})" if by_kind else ""))
    errors = ", ".join(f"{k} {v}" for k, v in sorted(st["errors_by_class"].items()))
    out.append(f"errors by class: {errors or 'none'}")
    out.append(f"tokens: {st['input_tokens']:,} in, {st['output_tokens']:,} out")
    if st["cached"]:
        out.append(f"from the cache: {st['cached']}")
    out.append(f"started {when(st['started'])}, wall {fmt_s(st['wall_s'])}")
    if st["eta_s"] is not None:
        out.append(f"ETA: {fmt_s(st['eta_s'])}")
    if st["process"]:
        out.append(f"running in process {st['process']['pid']} on {st['process']['host']}")
    elif st["status"] in ("crashed", "interrupted", "cancelled"):
        out.append(f"resume with: fanout resume {st['run_id']}")
    if st["cancel_requested"]:
        out.append(f"cancel asked: {st['cancel_requested']}")
    return out
