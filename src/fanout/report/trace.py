"""`fanout report RUN --trace FILE`: the timeline as Chrome trace event JSON (Perfetto,
chrome://tracing).

Process 1 holds the concurrency slots, one track each, and one complete event (`X`) per
attempt; process 2 the waits (category `wait`), on their packed rows; counters (`C`) give
in flight, and from the samples the concurrency limit, RPM and TPM in use. A dependency is a
flow arrow (`s` -> `f`) from the end of the last attempt of the task that had to finish to the
start of the first attempt of the task that waited for it. Times are microseconds since the
run's first instant.
"""

from __future__ import annotations

import json
from typing import Any

from fanout.report.timeline import Bar, Timeline

SLOTS_PID, WAITS_PID, COUNTERS_PID = 1, 2, 3


def _us(t: float) -> float:
    return round(t * 1e6, 1)


def trace_events(tl: Timeline) -> list[dict[str, Any]]:
    ev: list[dict[str, Any]] = [
        {"ph": "M", "pid": SLOTS_PID, "name": "process_name", "args": {"name": "slots"}},
        {"ph": "M", "pid": WAITS_PID, "name": "process_name", "args": {"name": "waits"}},
        {"ph": "M", "pid": COUNTERS_PID, "name": "process_name", "args": {"name": "counters"}},
    ]
    for s in range(tl.slots):
        ev.append(
            {
                "ph": "M",
                "pid": SLOTS_PID,
                "tid": s,
                "name": "thread_name",
                "args": {"name": f"slot {s}"},
            }
        )
    first: dict[int, Bar] = {}
    last: dict[int, Bar] = {}
    for b in tl.bars:
        ev.append(
            {
                "ph": "X",
                "pid": SLOTS_PID,
                "tid": b.slot,
                "ts": _us(b.t0),
                "dur": _us(b.t1 - b.t0),
                "name": b.key,
                "cat": f"lane:{b.lane}",
                "args": {
                    "task": b.n,
                    "agent": b.agent,
                    "lane": b.lane,
                    "attempt": b.attempt,
                    "outcome": b.outcome,
                    "error_class": b.error_class,
                    "error_kind": b.error_kind,
                    "tokens": b.tokens,
                    **({} if b.first_token is None else {"first_token_s": b.first_token - b.t0}),
                },
            }
        )
        if b.n not in first or b.attempt < first[b.n].attempt:
            first[b.n] = b
        if b.n not in last or b.attempt > last[b.n].attempt:
            last[b.n] = b
    for w in tl.waits:
        ev.append(
            {
                "ph": "X",
                "pid": WAITS_PID,
                "tid": w.row,
                "ts": _us(w.t0),
                "dur": _us(w.t1 - w.t0),
                "name": w.kind,
                "cat": "wait",
                "args": {"task": w.n},
            }
        )
    for t, v in tl.in_flight:
        ev.append(
            {
                "ph": "C",
                "pid": COUNTERS_PID,
                "name": "in flight",
                "ts": _us(t),
                "args": {"in flight": v},
            }
        )
    for sample in tl.samples:
        for name, value in (
            ("concurrency limit", sample.limit_now),
            ("RPM used", sample.rpm_used),
            ("TPM used", sample.tpm_used),
        ):
            if value is not None:
                ev.append(
                    {
                        "ph": "C",
                        "pid": COUNTERS_PID,
                        "name": name,
                        "ts": _us(sample.t),
                        "args": {name: value},
                    }
                )
    for i, (before, after) in enumerate(tl.deps):
        a, b2 = last.get(before), first.get(after)
        if a is None or b2 is None:
            continue
        # the start binds to the slice enclosing it: just inside the end of the last attempt
        ev.append(
            {
                "ph": "s",
                "id": i,
                "pid": SLOTS_PID,
                "tid": a.slot,
                # from the slice's own rounded start and duration: rounding t1 apart
                # could put the point just past the slice's end
                "ts": round(_us(a.t0) + max(_us(a.t1 - a.t0) - 0.1, 0.0), 1),
                "name": "depends",
                "cat": "dependency",
            }
        )
        ev.append(
            {
                "ph": "f",
                "bp": "e",
                "id": i,
                "pid": SLOTS_PID,
                "tid": b2.slot,
                "ts": _us(b2.t0),
                "name": "depends",
                "cat": "dependency",
            }
        )
    return ev


def render_trace(tl: Timeline) -> str:
    doc = {
        "traceEvents": trace_events(tl),
        "displayTimeUnit": "ms",
        "otherData": {"run": tl.run_id, "kind": tl.kind, "origin_unix_s": tl.origin},
    }
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
