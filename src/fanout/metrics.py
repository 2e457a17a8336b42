"""Run metrics, computed from the run's event stream (a synchronous listener: never lossy).

wall time, serial estimate (sum of attempt durations), speedup (serial / wall), concurrency
utilisation (busy slot-seconds / (wall x slots)), throughput, p50/p95 latency (overall and per
agent), retries, tokens, failures by error kind, peak memory.
"""

from __future__ import annotations

import resource
import sys
from array import array
from collections import Counter
from typing import Any

from fanout.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskRetrying,
    TasksAdded,
    TaskSlow,
    TaskStarted,
)
from fanout.tasks import TaskState


def percentile(values: array[float] | list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100.0 * (len(s) - 1))))
    return float(s[k])


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # kilobytes on Linux, bytes on macOS
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class LaneCounts:
    __slots__ = ("done", "failed", "running", "total")

    def __init__(self) -> None:
        self.total = 0
        self.running = 0
        self.done = 0
        self.failed = 0  # failed, skipped or cancelled


class RunMetrics:
    """Listens to one run's events and keeps the figures a summary or a report needs."""

    def __init__(self, run_id: str, concurrency: int) -> None:
        self.run_id = run_id
        self.concurrency = concurrency
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.status = "running"
        self.total = 0
        self.running = 0
        self.states: Counter[str] = Counter()
        self.lanes: dict[str, LaneCounts] = {}
        self.attempts = 0
        self.retries = 0
        self.retries_by_kind: Counter[str] = Counter()
        self.failures_by_kind: Counter[str] = Counter()
        self.busy_s = 0.0
        self.latencies: array[float] = array("d")
        self.latencies_by_agent: dict[str, array[float]] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.slow = 0

    def _lane(self, name: str) -> LaneCounts:
        lc = self.lanes.get(name)
        if lc is None:
            lc = self.lanes[name] = LaneCounts()
        return lc

    def __call__(self, ev: Event) -> None:
        # ordered by frequency: two task events per task, the rest rare
        if isinstance(ev, TaskStarted):
            self.attempts += 1
            self.running += 1
            self._lane(ev.lane).running += 1
        elif isinstance(ev, TaskFinished):
            self._finished(ev)
        elif isinstance(ev, TaskRetrying):
            self.running -= 1
            self._lane(ev.lane).running -= 1
            self.retries += 1
            self.retries_by_kind[ev.error.kind] += 1
            self.busy_s += ev.duration
        elif isinstance(ev, TasksAdded):
            self.total = ev.total
            self.add_lane_totals(ev.lanes)
        elif isinstance(ev, RunStarted):
            self.started_at = ev.t
            self.total = ev.total
        elif isinstance(ev, TaskSlow):
            self.slow += 1
        elif isinstance(ev, RunFinished):
            self.ended_at = ev.t
            self.status = ev.status

    def _finished(self, ev: TaskFinished) -> None:
        r = ev.result
        state = ev.state
        self.states[state] += 1
        lane = self._lane(ev.lane)
        if ev.duration >= 0.0:  # ended by an attempt (else: skipped or cancelled while queued)
            self.running -= 1
            lane.running -= 1
            self.busy_s += ev.duration
        if state is TaskState.DONE:
            lane.done += 1
            self.latencies.append(r.latency_s)
            agent = ev.task.agent
            if agent is not None:
                arr = self.latencies_by_agent.get(agent)
                if arr is None:
                    arr = self.latencies_by_agent[agent] = array("d")
                arr.append(r.latency_s)
        else:
            lane.failed += 1
            if state is TaskState.FAILED and r.error is not None:
                self.failures_by_kind[r.error.kind] += 1
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens

    def add_lane_totals(self, lanes: dict[str, int]) -> None:
        for name, n in lanes.items():
            self._lane(name).total += n

    @property
    def finished(self) -> int:
        return sum(self.states.values())

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures so far (final once the run has finished)."""
        start = self.started_at if self.started_at is not None else now
        end = self.ended_at if self.ended_at is not None else now
        wall = max(end - start, 1e-9)
        finished = self.finished
        remaining = self.total - finished
        rate = finished / wall
        return {
            "run_id": self.run_id,
            "status": self.status,
            "total": self.total,
            "done": self.states[TaskState.DONE],
            "failed": self.states[TaskState.FAILED],
            "skipped": self.states[TaskState.SKIPPED],
            "cancelled": self.states[TaskState.CANCELLED],
            "running": self.running,
            "waiting": max(0, remaining - self.running),
            "wall_s": round(wall, 4),
            "serial_s": round(self.busy_s, 4),
            "speedup": round(self.busy_s / wall, 3),
            "utilisation": round(self.busy_s / (wall * self.concurrency), 4),
            "throughput_per_s": round(rate, 2),
            "p50_s": round(percentile(self.latencies, 50), 4),
            "p95_s": round(percentile(self.latencies, 95), 4),
            "p50_by_agent": {
                a: round(percentile(v, 50), 4) for a, v in sorted(self.latencies_by_agent.items())
            },
            "p95_by_agent": {
                a: round(percentile(v, 95), 4) for a, v in sorted(self.latencies_by_agent.items())
            },
            "attempts": self.attempts,
            "retries": self.retries,
            "retries_by_kind": dict(self.retries_by_kind),
            "failures_by_kind": dict(self.failures_by_kind),
            "slow": self.slow,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "eta_s": round(remaining / rate, 1) if rate > 0 and remaining > 0 else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
