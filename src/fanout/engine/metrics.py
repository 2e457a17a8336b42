"""Run metrics, computed from the run's event stream (a synchronous listener: never lossy).

wall time, serial estimate (sum of attempt durations), speedup (serial / wall), concurrency
utilisation (busy slot-seconds / (wall x slots)), throughput, p50/p95 latency (overall and per
agent), retries, tokens, failures by error kind, peak memory.

A resumed run's metrics start from what the store holds of its earlier segments
(`RunMetrics.seed`), and `metrics_from_snapshot` computes a stored run's figures with the
same code, so `fanout report RUN` and `run.metrics()` give the same numbers: sums of
durations are summed as whole nanoseconds (integers: the order in which attempts are added
cannot change the sum),
wall times are summed segment by segment in the same order. Answers from the result cache
(done with no attempt) count as done but add no latency and no tokens.
"""

from __future__ import annotations

import math
import resource
import sys
from array import array
from collections import Counter
from typing import TYPE_CHECKING, Any

from fanout.engine.events import (
    Event,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskInterrupted,
    TaskRetrying,
    TasksAdded,
    TaskSlow,
    TaskStarted,
)
from fanout.engine.sketch import LatencySketch
from fanout.tasks import TaskState

if TYPE_CHECKING:
    from fanout.store.base import DoneGroup, RunSnapshot


def percentile(values: array[float] | list[float] | LatencySketch, q: float) -> float:
    """Nearest-rank percentile (q in 0..100): the smallest value with at least q % of the
    values at or below it; 0.0 for no values. From a sketch: within its accuracy."""
    if isinstance(values, LatencySketch):
        return values.percentile(q)
    if not values:
        return 0.0
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(q / 100.0 * len(s) - 1e-9) - 1))
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
        self.busy_ns = 0  # attempt durations, summed in whole nanoseconds
        # sketches, not every duration: a million-line run keeps a few hundred buckets
        self.latencies = LatencySketch()
        self.latencies_by_agent: dict[str, LatencySketch] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.slow = 0
        self.cached = 0
        self.interrupted = 0
        self.prior_wall_s = 0.0  # earlier segments of a resumed run
        self.prior_slot_s = 0.0  # their wall x concurrency

    def lane(self, name: str) -> LaneCounts:
        lc = self.lanes.get(name)
        if lc is None:
            lc = self.lanes[name] = LaneCounts()
        return lc

    def __call__(self, ev: Event) -> None:
        # ordered by frequency: two task events per task, the rest rare
        if isinstance(ev, TaskStarted):
            self.attempts += 1
            self.running += 1
            (self.lanes.get(ev.lane) or self.lane(ev.lane)).running += 1
        elif isinstance(ev, TaskFinished):
            self._finished(ev)
        elif isinstance(ev, TaskRetrying):
            self.running -= 1
            self.lane(ev.lane).running -= 1
            self.retries += 1
            self.retries_by_kind[ev.error.kind] += 1
            self.busy_ns += int(ev.duration * 1e9 + 0.5)
        elif isinstance(ev, TasksAdded):
            self.total = ev.total
            self.add_lane_totals(ev.lanes)
        elif isinstance(ev, RunStarted):
            self.started_at = ev.t
            self.total = ev.total
        elif isinstance(ev, TaskSlow):
            self.slow += 1
        elif isinstance(ev, TaskInterrupted):
            self.running -= 1
            self.lane(ev.lane).running -= 1
            self.interrupted += 1
            self.busy_ns += int(ev.duration * 1e9 + 0.5)
        elif isinstance(ev, RunFinished):
            self.ended_at = ev.t
            self.status = ev.status

    def _finished(self, ev: TaskFinished) -> None:
        r = ev.result
        state = ev.state
        self.states[state] += 1
        lane = self.lanes.get(ev.lane) or self.lane(ev.lane)
        if ev.duration >= 0.0:  # ended by an attempt (else: skipped or cancelled while queued)
            self.running -= 1
            lane.running -= 1
            self.busy_ns += int(ev.duration * 1e9 + 0.5)
        if state is TaskState.DONE and r.attempts:  # the common case, inline
            lane.done += 1
            self.latencies.append(r.latency_s)
            agent = ev.task.agent
            if agent is not None:
                arr = self.latencies_by_agent.get(agent)
                if arr is None:
                    arr = self.latencies_by_agent[agent] = LatencySketch()
                arr.append(r.latency_s)
            self.input_tokens += r.input_tokens
            self.output_tokens += r.output_tokens
        else:
            self._result(state, r.attempts, r.latency_s, ev.task.agent, lane, r.error)
            if r.attempts:
                self.input_tokens += r.input_tokens
                self.output_tokens += r.output_tokens

    def _result(
        self,
        state: TaskState,
        attempts: int,
        latency_s: float,
        agent: str | None,
        lane: LaneCounts,
        error: Any,
    ) -> None:
        if state is TaskState.DONE:
            lane.done += 1
            if not attempts:  # from the cache: no call, no latency
                self.cached += 1
                return
            self.latencies.append(latency_s)
            if agent is not None:
                arr = self.latencies_by_agent.get(agent)
                if arr is None:
                    arr = self.latencies_by_agent[agent] = LatencySketch()
                arr.append(latency_s)
        else:
            lane.failed += 1
            if state is TaskState.FAILED and error is not None:
                self.failures_by_kind[error.kind] += 1

    def seed(self, snap: RunSnapshot, dropped: set[int] | None = None) -> None:
        """Start from what `snap` holds: its attempts, its results (but those in `dropped`:
        they run again) and its segments' wall time."""
        tasks = snap.tasks
        self.seed_segments(snap)
        for _n, _attempt, outcome, kind, duration in snap.attempts:
            self.seed_attempts(outcome, kind, 1, int((duration or 0.0) * 1e9 + 0.5))
        for n, r in snap.results.items():
            if dropped and n in dropped:
                continue
            st = tasks[n] if n < len(tasks) else None
            self.seed_result(
                r.state,
                st.lane if st else None,
                st.agent if st else None,
                r.attempts,
                r.latency_s,
                r.error,
                r.input_tokens,
                r.output_tokens,
            )

    def seed_segments(self, snap: RunSnapshot) -> None:
        """The wall time of a resumed run's earlier segments."""
        for seg in snap.segments:
            w = seg.wall
            self.prior_wall_s += w
            self.prior_slot_s += w * seg.concurrency

    def seed_attempts(self, outcome: str | None, kind: str | None, count: int, ns: int) -> None:
        """`count` earlier attempts that ended with `outcome` (and error `kind`), lasting
        `ns` nanoseconds in all."""
        self.attempts += count
        self.busy_ns += ns
        if outcome == "error":
            self.retries += count
            self.retries_by_kind[kind or "error"] += count
        elif outcome is None or outcome == "interrupted":
            self.interrupted += count

    def seed_result(
        self,
        state: TaskState,
        lane: str | None,
        agent: str | None,
        attempts: int,
        latency_s: float,
        error: Any,
        input_tokens: int,
        output_tokens: int,
    ) -> None:
        """An earlier segment's result, kept."""
        self.states[state] += 1
        self._result(state, attempts, latency_s, agent, self.lane(lane or "default"), error)
        if attempts:
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def seed_done(self, g: DoneGroup) -> None:
        """Earlier segments' done results counted together (`DoneGroup`): what
        `seed_result` of each would do."""
        self.states[TaskState.DONE] += g.count
        self.lane(g.lane or "default").done += g.count
        if not g.called:  # from the cache: no call, no latency
            self.cached += g.count
            return
        self.input_tokens += g.input_tokens
        self.output_tokens += g.output_tokens
        self.latencies.add_bucket(g.bucket, g.count, g.lo, g.hi)
        if g.agent is not None:
            sk = self.latencies_by_agent.get(g.agent)
            if sk is None:
                sk = self.latencies_by_agent[g.agent] = LatencySketch()
            sk.add_bucket(g.bucket, g.count, g.lo, g.hi)

    def add_lane_totals(self, lanes: dict[str, int]) -> None:
        for name, n in lanes.items():
            self.lane(name).total += n

    @property
    def finished(self) -> int:
        return sum(self.states.values())

    def snapshot(self, now: float) -> dict[str, Any]:
        """The figures so far (final once the run has finished)."""
        seg = 0.0
        if self.started_at is not None:
            seg = (self.ended_at if self.ended_at is not None else now) - self.started_at
        wall = max(self.prior_wall_s + seg, 1e-9)
        slot_s = max(self.prior_slot_s + seg * self.concurrency, 1e-9)
        busy = self.busy_ns / 1e9
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
            "serial_s": round(busy, 4),
            "speedup": round(busy / wall, 3),
            "utilisation": round(busy / slot_s, 4),
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
            "cached": self.cached,
            "interrupted": self.interrupted,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "eta_s": round(remaining / rate, 1) if rate > 0 and remaining > 0 else None,
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


def metrics_from_snapshot(snap: RunSnapshot) -> dict[str, Any]:
    """A stored run's figures, as `run.metrics()` gives them (see the module docstring)."""
    conc = snap.segments[-1].concurrency if snap.segments else 1
    m = RunMetrics(snap.run_id, max(1, conc))
    m.total = len(snap.tasks)
    for st in snap.tasks:
        m.lane(st.lane or "default").total += 1
    m.seed(snap)
    m.status = snap.status
    out = m.snapshot(0.0)
    out.pop("peak_rss_mb")
    return out
