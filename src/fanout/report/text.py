"""A run in words: the end-of-run summary, and what `fanout runs`, `fanout status` and
`fanout report` print, from the store.

`run_report` computes a stored run's metrics with the code `run.metrics()` uses
(`metrics_from_snapshot`), so the report of a run and the summary its process printed give
the same numbers.
"""

from __future__ import annotations

import re
import sqlite3
import time
from typing import Any

from fanout.engine.metrics import metrics_from_snapshot
from fanout.store.queries import load_snapshot


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
        ("serial estimate", f"{fmt_s(m['serial_s'])} (sum of attempt durations)"),
        ("speedup", f"{m['speedup']:.2f}x"),
        ("utilisation", f"{m['utilisation'] * 100:.0f}% of the concurrency limit"),
        ("latency", f"p50 {fmt_s(m['p50_s'])}, p95 {fmt_s(m['p95_s'])}"),
        ("retries", _counts(m["retries"], m["retries_by_kind"]) + _budget_spent(m)),
        ("failures", _counts(m["failed"], m["failures_by_kind"])),
        ("tokens", f"{m['input_tokens']:,} in, {m['output_tokens']:,} out"),
    ]
    if "cost_usd" in m:
        cap = m.get("max_cost_usd")
        rows.append(("cost", f"${m['cost_usd']:.4f}" + (f" (cap ${cap:g})" if cap else "")))
    if m.get("cancel_reason"):
        rows.append(("cancelled", str(m["cancel_reason"])))
    return rows


_SPENT = re.compile(r"\[retry budget spent \(\d+/(\d+)\)\]")


def _budget_spent(m: dict[str, Any]) -> str:
    """Said when the run-wide retry budget ran out while tasks failed (they were not all
    retried as their attempts allowed)."""
    budget = m.get("retry_budget")
    if budget is None or not m["failed"] or m["retries"] < budget:
        return ""
    return f"; retry budget spent ({m['retries']}/{budget})"


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
    # the store keeps no retry budget; a task it failed says it in its error
    for r in snap.results.values():
        spent = _SPENT.search(r.error.message) if r.error is not None else None
        if spent is not None:
            m["retry_budget"] = int(spent[1])
            break
    m["status"] = display_status(snap.status, snap.lease)
    m["kind"] = snap.kind
    m["segments"] = len(snap.segments)
    return m


def report_lines(m: dict[str, Any]) -> list[tuple[str, str]]:
    """The report as (label, value) rows: the run summary, then latency per agent."""
    rows = [("run", f"{m['run_id']} ({m.get('kind', '-')}, {m['status']})")]
    rows += summary_lines(m)
    if m.get("cached"):
        rows.append(("from the cache", f"{m['cached']} answers (no call, no tokens)"))
    if m.get("interrupted"):
        rows.append(("interrupted", f"{m['interrupted']} attempts (run again on resume)"))
    if m.get("segments", 1) > 1:
        rows.append(("segments", f"{m['segments']} (the first run and each resume)"))
    for agent, p50 in m.get("p50_by_agent", {}).items():
        p95 = m["p95_by_agent"][agent]
        rows.append((f"  {agent}", f"p50 {fmt_s(p50)}, p95 {fmt_s(p95)}"))
    return rows


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
