"""The run store: every run, task, attempt, result and sink acknowledgement goes through it.

The interface is async and batched: `write(ops)` returns when every op in the batch is
durable. The engine never awaits a single transition on the hot path; its `Journal` groups
them and learns when each batch is durable. `MemoryStore` keeps everything in this process
(the default for library use); `SqliteStore` (store/sqlite.py) keeps it in a file, so a run
can be resumed after a crash, and holds the result cache.

Ops are idempotent: applying a batch twice leaves the store as applying it once.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fanout.errors import RunBusy as RunBusy
from fanout.tasks import ErrorInfo, Result, Task, TaskState


@dataclass(slots=True, frozen=True)
class RunOpened:
    run_id: str
    kind: str
    created_at: float  # unix time
    config: Mapping[str, Any]
    settings: Mapping[str, Any] = field(default_factory=dict)  # what results depend on
    owner: str | None = None  # the lease holder (see `Lease`)
    concurrency: int = 0


@dataclass(slots=True, frozen=True)
class RunResumed:
    """A stored run goes on in this process: a new segment, the lease taken."""

    run_id: str
    t: float  # unix time
    config: Mapping[str, Any]
    settings: Mapping[str, Any]
    owner: str
    concurrency: int


@dataclass(slots=True, frozen=True)
class TasksAdded:
    run_id: str
    tasks: Sequence[Task]
    specs: Sequence[str | None] | None = None  # JSON per task (store/spec.py), when kept


#: a task's span (engine/spans.py): (kind, t0, t1, attempt, detail, first token time), in
#: the engine's loop time
Span = tuple[str, float, float, int | None, str | None, float | None]
#: spans handed to the store with an op: (clock, seq, spans): unix time = loop time + clock;
#: the first one is the task's `seq`-th in this process (the store numbers them on from
#: there, after those of the run's earlier segments)
SpanBatch = tuple[float, int, tuple[Span, ...]]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field
class AttemptStarted:
    run_id: str
    n: int
    attempt: int
    t: float  # unix time
    spans: SpanBatch | None = None  # the task's spans closed since its last op


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field
class AttemptFailed:
    """An attempt that ended in an error and will be retried."""

    run_id: str
    n: int
    attempt: int
    duration: float
    error: ErrorInfo
    spans: SpanBatch | None = None
    #: it reached the provider yet cost no attempt nor retry budget (`m003_free_attempts`)
    free: bool = False


@dataclass(slots=True, frozen=True)
class AttemptInterrupted:
    """An attempt stopped by an interrupt (Ctrl-C): the task goes back to waiting."""

    run_id: str
    n: int
    attempt: int
    duration: float
    spans: SpanBatch | None = None


#: `ResultRecorded.cache`: how the result relates to the result cache
CACHE_NONE = 0  # not cached (no cache, or not a done result)
CACHE_STORE = 1  # a fresh answer: store it in the cache under `cache_key`
CACHE_HIT = 2  # the answer came from the cache (or from an identical request in flight)


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs a call per field
class ResultRecorded:
    """The task's terminal state and result (its last attempt's outcome included)."""

    run_id: str
    n: int
    result: Result
    duration: float  # of the attempt that ended it; -1 when none did
    cache_key: bytes | None = None
    request_hash: bytes | None = None  # sha256 of the canonical body (the sim-server's hash)
    cache: int = CACHE_NONE
    spans: SpanBatch | None = None


@dataclass(slots=True, frozen=True)
class Sampled:
    """The run's state now (about once a second while it runs, and at its end)."""

    run_id: str
    t: float  # unix time
    in_flight: int
    limit_now: int  # the concurrency allowed now (adaptive limits included)
    rpm_used: float  # calls started per minute, over the time since the last sample
    tpm_used: float  # tokens per minute, likewise


@dataclass(slots=True, frozen=True)
class ResultsDropped:
    """Forget these tasks' results (on resume: cancelled or skipped ones, or the ones a
    `--reconfigure` re-runs), so they run again."""

    run_id: str
    ns: Sequence[int]


@dataclass(slots=True, frozen=True)
class SinkAcked:
    """Sink `sink` has written everything of run `run_id` up to `position` (sink-defined)."""

    run_id: str
    sink: str
    position: int


@dataclass(slots=True, frozen=True)
class Heartbeat:
    """The lease holder is alive: extend its lease, note the time (a crash's wall time)."""

    run_id: str
    owner: str
    t: float  # unix time
    until: float  # unix time the lease lasts to


@dataclass(slots=True, frozen=True)
class RunClosed:
    run_id: str
    status: str  # done | failed | cancelled | interrupted
    ended_at: float  # unix time
    wall_s: float = -1.0  # this segment's wall time, as the run's metrics measured it
    peak_rss_mb: float = -1.0  # the process's peak memory when the segment ended


Op = (
    RunOpened
    | RunResumed
    | TasksAdded
    | AttemptStarted
    | AttemptFailed
    | AttemptInterrupted
    | ResultRecorded
    | ResultsDropped
    | SinkAcked
    | Heartbeat
    | RunClosed
    | Sampled
)


@dataclass(slots=True, frozen=True)
class Lease:
    """Who runs a run: a process claims it before it starts or resumes it."""

    owner: str  # a random token per engine
    pid: int
    host: str
    until: float  # unix time


@dataclass(slots=True)
class StoredTask:
    n: int
    key: str
    lane: str | None
    agent: str | None
    spec: str | None  # JSON (store/spec.py), None when the task could not be stored


@dataclass(slots=True)
class StoredResult:
    """A result row: everything of a `Result` but its task."""

    n: int
    state: TaskState
    text: str | None
    data: Any
    finish_reason: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    attempts: int
    latency_s: float
    error: ErrorInfo | None
    duration: float
    cache_key: bytes | None = None

    def to_result(self, task: Task) -> Result:
        return Result(
            task,
            self.state,
            text=self.text,
            data=self.data,
            finish_reason=self.finish_reason,
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            attempts=self.attempts,
            latency_s=self.latency_s,
            error=self.error,
        )


@dataclass(slots=True)
class Segment:
    """One process's stretch of a run (a run resumed twice has three)."""

    started_at: float
    last_seen: float | None
    wall_s: float | None  # measured by the engine; None when the process died
    concurrency: int

    @property
    def wall(self) -> float:
        if self.wall_s is not None:
            return self.wall_s
        return max(0.0, (self.last_seen or self.started_at) - self.started_at)


@dataclass(slots=True)
class RunSnapshot:
    """A stored run, as much as resuming or reporting it needs."""

    run_id: str
    kind: str
    status: str
    created_at: float
    config: dict[str, Any]
    settings: dict[str, Any]
    tasks: list[StoredTask]
    results: dict[int, StoredResult]
    #: every attempt, by task and number: (n, attempt, outcome, error kind, duration);
    #: outcome None: running when its process stopped (it never ended)
    attempts: list[tuple[int, int, str | None, str | None, float | None]]
    acks: dict[str, int]
    segments: list[Segment]
    lease: Lease | None = None
    cancel_requested: str | None = None
    #: n -> its attempts that reached the provider and cost nothing (`m003_free_attempts`)
    free: dict[int, int] = field(default_factory=dict)

    def tries(self) -> dict[int, int]:
        """n -> attempts made so far (the highest attempt number)."""
        return {a[0]: a[1] for a in self.attempts}


@dataclass(frozen=True, slots=True)
class DoneGroup:
    """Done results a lean resume does not load, counted together in SQL: those of one
    lane, agent and model, called (`attempts` > 0) or answered from the cache, whose
    latencies fall in one bucket of the caller's log-bucketed sketch: ceil(ln(latency) /
    `bucket_log`); `bucket` is None for a latency <= 0 and for cache answers. Added up
    over a read's groups, the counts and tokens are exact; a read of one lane, agent and
    model (store/lean.py) may put all tokens on one group, give every group the smallest
    and largest latency of all, and count the buckets from a sample scaled to the total."""

    lane: str | None
    agent: str | None
    model: str | None
    called: bool
    bucket: int | None
    count: int
    input_tokens: int
    output_tokens: int
    lo: float  # the smallest and largest latency of the group
    hi: float


@dataclass(slots=True)
class OpenRun:
    """A stored run as a lean resume reads it (`Store.open_run`): `snap` holds only the
    live tasks (those without a done result, the finished ones named in `keep`, and the
    few newest done ones, to check that their requests are unchanged) with their results
    and attempts; the rest of the run is counts. What it costs grows with what is left to
    run, not with what is done."""

    snap: RunSnapshot
    stored: int  # the run's tasks, numbered 0..stored-1
    lanes: dict[str | None, int]  # the stored tasks by lane, all of them
    #: every attempt of the run, grouped: (outcome, error kind, count, summed duration ns)
    attempt_totals: list[tuple[str | None, str | None, int, int]]
    #: attempts that failed other than by connection, all of them (the retry budget's use)
    retries: int
    #: the done results not in `snap`, grouped (a few hundred rows for a million results)
    done: list[DoneGroup]


class Store(Protocol):
    #: True when runs outlive the process (resume, leases, cancel from another process)
    persistent: bool

    async def write(self, ops: Sequence[Op]) -> None:
        """Apply a batch of ops; every one is durable when this returns."""
        ...

    async def results(self, run_id: str, tasks: Sequence[Task] | None = None) -> list[Result]:
        """The run's recorded results, by task number (attached to `tasks[n]` if given)."""
        ...

    async def sink_position(self, run_id: str, sink: str) -> int:
        """Where sink `sink` acknowledged it had got to (-1 when never)."""
        ...

    async def run_info(self, run_id: str, counts: bool = True) -> dict[str, Any] | None:
        """The run's kind, config and status, and with `counts` how many tasks, results and
        attempts it has (those are scans of the run's rows: a resume does not need them)."""
        ...

    async def snapshot(self, run_id: str) -> RunSnapshot | None:
        """Everything needed to resume or report `run_id`; None if unknown."""
        ...

    async def open_run(
        self, run_id: str, keep: Collection[str], bucket_log: float
    ) -> OpenRun | None:
        """What a lean resume of `run_id` needs (see `OpenRun`); the done results it does
        not load come as `DoneGroup`s bucketed by `bucket_log`. None if unknown."""
        ...

    async def claim(self, run_id: str, lease: Lease) -> None:
        """Take the run's lease; raises `RunBusy` while another live process holds it."""
        ...

    async def cancel_requests(self, run_ids: Sequence[str]) -> dict[str, str]:
        """Cancellations asked for from elsewhere (`fanout cancel`): run id -> reason."""
        ...

    async def cache_get(self, keys: Sequence[bytes], newer_than: float) -> dict[bytes, Any]:
        """Cached answers (`StoredResult`) for `keys` stored after `newer_than` (unix)."""
        ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _RunData:
    opened: RunOpened
    tasks: list[Task] = field(default_factory=list)
    results: list[Result | None] = field(default_factory=list)  # by task number
    attempts_started: int = 0
    attempts_failed: list[AttemptFailed] = field(default_factory=list)
    spans: list[tuple[int, int, Span]] = field(default_factory=list)  # (n, seq, unix span)
    samples: list[Sampled] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    status: str = "running"
    ended_at: float | None = None


class MemoryStore:
    """A store that lives as long as the process: what the engine uses when none is given.
    Its result cache (used only when the engine is asked for one) is a dict. It keeps the
    tasks' spans and the run's samples only when asked (`spans=True`): they would about
    double the memory a finished task holds, for a picture nobody asked for."""

    persistent = False

    def __init__(self, *, spans: bool = False) -> None:
        self._keep_spans = spans
        #: whether the engine hands it each task's spans (none are made for a store that
        #: would drop them: the engine skips that work)
        self.keeps_spans = spans
        self._runs: dict[str, _RunData] = {}
        self._cache: dict[bytes, tuple[float, StoredResult]] = {}
        self.batches = 0  # how many write() calls: lets tests see grouping

    async def write(self, ops: Sequence[Op]) -> None:
        self.batches += 1
        runs = self._runs
        for op in ops:
            if isinstance(op, ResultRecorded):
                runs[op.run_id].results[op.n] = op.result
                if op.cache == CACHE_STORE and op.cache_key is not None:
                    self._cache[op.cache_key] = (time.time(), _stored(op))
                if op.spans and self._keep_spans:
                    runs[op.run_id].spans.extend(_unix(op.n, op.spans))
            elif isinstance(op, AttemptStarted):
                data = runs[op.run_id]
                data.attempts_started += 1
                if op.spans and self._keep_spans:
                    data.spans.extend(_unix(op.n, op.spans))
            elif isinstance(op, AttemptFailed):
                data = runs[op.run_id]
                data.attempts_failed.append(op)
                if op.spans and self._keep_spans:
                    data.spans.extend(_unix(op.n, op.spans))
            elif isinstance(op, AttemptInterrupted):
                if op.spans and self._keep_spans:
                    runs[op.run_id].spans.extend(_unix(op.n, op.spans))
            elif isinstance(op, Sampled):
                if self._keep_spans:
                    runs[op.run_id].samples.append(op)
            elif isinstance(op, TasksAdded):
                data = runs[op.run_id]
                data.tasks.extend(op.tasks)
                data.results.extend([None] * len(op.tasks))
            elif isinstance(op, RunOpened):
                runs[op.run_id] = _RunData(op)
            elif isinstance(op, SinkAcked):
                runs[op.run_id].acks[op.sink] = op.position
            elif isinstance(op, RunClosed):
                data = runs[op.run_id]
                data.status, data.ended_at = op.status, op.ended_at
            elif isinstance(op, ResultsDropped):
                data = runs[op.run_id]
                for n in op.ns:
                    data.results[n] = None

    async def results(self, run_id: str, tasks: Sequence[Task] | None = None) -> list[Result]:
        return [r for r in self._runs[run_id].results if r is not None]

    def spans(self, run_id: str) -> list[tuple[int, int, Span]]:
        """The run's spans as (task number, seq, span in unix time), as they were written."""
        return list(self._runs[run_id].spans)

    def samples(self, run_id: str) -> list[Sampled]:
        return list(self._runs[run_id].samples)

    async def sink_position(self, run_id: str, sink: str) -> int:
        return self._runs[run_id].acks.get(sink, -1)

    async def run_info(self, run_id: str, counts: bool = True) -> dict[str, Any] | None:
        data = self._runs.get(run_id)
        if data is None:
            return None
        return {
            "run_id": run_id,
            "kind": data.opened.kind,
            "created_at": data.opened.created_at,
            "config": dict(data.opened.config),
            "tasks": len(data.tasks),
            "results": sum(r is not None for r in data.results),
            "attempts_started": data.attempts_started,
            "attempts_failed": len(data.attempts_failed),
            "status": data.status,
            "ended_at": data.ended_at,
        }

    async def snapshot(self, run_id: str) -> RunSnapshot | None:
        return None  # runs do not outlive the process: nothing to resume

    async def open_run(
        self, run_id: str, keep: Collection[str], bucket_log: float
    ) -> OpenRun | None:
        return None

    async def claim(self, run_id: str, lease: Lease) -> None:
        return None

    async def cancel_requests(self, run_ids: Sequence[str]) -> dict[str, str]:
        return {}

    async def cache_get(self, keys: Sequence[bytes], newer_than: float) -> dict[bytes, Any]:
        out: dict[bytes, Any] = {}
        for k in keys:
            hit = self._cache.get(k)
            if hit is not None and hit[0] > newer_than:
                out[k] = hit[1]
        return out

    async def close(self) -> None:
        return None


def _unix(n: int, batch: SpanBatch) -> list[tuple[int, int, Span]]:
    clock, seq, spans = batch
    return [
        (n, seq + i, (k, a + clock, b + clock, at, d, None if ft is None else ft + clock))
        for i, (k, a, b, at, d, ft) in enumerate(spans)
    ]


def _stored(op: ResultRecorded) -> StoredResult:
    r = op.result
    return StoredResult(
        op.n,
        r.state,
        r.text,
        r.data,
        r.finish_reason,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.attempts,
        r.latency_s,
        r.error,
        op.duration,
        op.cache_key,
    )
