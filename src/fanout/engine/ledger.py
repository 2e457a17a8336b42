"""`Ledger`: every change of a task's or a run's state, in one place: the journal op that
makes it durable and the event that reports it, side by side, so store and events cannot
drift apart. It readies tasks (or skips them, or answers them from the cache), records and
reports results once durable, closes runs (done, failed, cancelled, interrupted), and is the
`RunOwner` every `Run` talks to. Each task's spans (engine/spans.py) ride with its ops.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from typing import Any

from fanout.engine import spans
from fanout.engine.cache import CacheGate, request_keys
from fanout.engine.events import (
    LimiterChanged,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskInterrupted,
    TaskRetrying,
    TasksAdded,
    TaskStarted,
)
from fanout.engine.metrics import peak_rss_mb
from fanout.engine.parking import Parking
from fanout.engine.plan import DEFAULT_LANE, Planner
from fanout.engine.request import build_request
from fanout.engine.run import Run, run_of
from fanout.engine.samples import Sampler
from fanout.engine.scheduler import Group, Scheduler, group_of
from fanout.engine.settings import EngineSettings
from fanout.engine.slots import INTERRUPT, Slots
from fanout.engine.spans import DEPS, QUEUED
from fanout.errors import FanoutError
from fanout.store.base import (
    CACHE_HIT,
    CACHE_NONE,
    CACHE_STORE,
    AttemptFailed,
    AttemptInterrupted,
    AttemptStarted,
    Heartbeat,
    Op,
    ResultRecorded,
    RunClosed,
    SinkAcked,
    Store,
)
from fanout.store.base import TasksAdded as StoreTasksAdded
from fanout.store.journal import HIGH_WATER_OPS, MAX_BATCH_OPS, Journal
from fanout.tasks import ErrorInfo, Result, Task, TaskState

RUNNING = TaskState.RUNNING
READY = TaskState.READY
WAITING = TaskState.WAITING
DONE = TaskState.DONE
FAILED = TaskState.FAILED
SKIPPED = TaskState.SKIPPED
CANCELLED = TaskState.CANCELLED

#: a stored task's description (`fanout.store.spec.task_spec`), for stores that keep them
TaskSpec = Callable[[Task], Any]


class Ledger:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: EngineSettings,
        store: Store,
        planner: Planner,
        scheduler: Scheduler,
        slots: Slots,
        task_spec: TaskSpec | None,
        keep_keys: bool,
    ) -> None:
        self._loop = loop
        self._clock = time.time() - loop.time()  # loop time + this = unix time
        self._settings = settings
        self._store = store
        self._planner = planner
        self._sched = scheduler
        self._slots = slots
        self._task_spec = task_spec
        self.keeps_keys = keep_keys  # keep each task's first request keys (for the store)
        self._keep_spans = bool(getattr(store, "keeps_spans", True))  # else spans.drop
        self._journal: Journal[Task] = Journal(store, self._on_durable, self._on_store_error)
        self._sampler = Sampler(planner, slots, settings.concurrency, self._clock)
        self._runs: dict[str, Run] = {}
        self._gate: CacheGate | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._parking = Parking(loop, scheduler, planner)
        self.fatal: BaseException | None = None  # the store's failure, once it failed

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._journal.start()

    def use_cache(self, gate: CacheGate) -> None:
        self._gate = gate

    async def flush(self) -> None:
        await self._journal.flush()

    async def aclose(self) -> None:
        if self.fatal is None:
            await self._journal.flush()
        await self._journal.aclose()

    def unix(self, loop_time: float) -> float:
        return loop_time + self._clock

    # -- runs -----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    @property
    def runs(self) -> list[Run]:
        return list(self._runs.values())

    def forget(self, run: Run) -> None:  # a finished run, out of a long-lived engine's memory
        if run.done and run.status != "running":
            self._runs.pop(run.id, None)

    def live_runs(self) -> list[Run]:
        return [r for r in self._runs.values() if r.status == "running" and not r.done]

    def open(self, run: Run, tasks: list[Task], op: Op, deadline_s: float | None) -> None:
        """Start `run` (checked already) with `tasks`; `op` records its opening."""
        self._runs[run.id] = run
        self._journal.append(op)
        run.bus.emit(RunStarted(self._loop.time(), run.id, 0))
        self._set_deadline(run, deadline_s)
        self._admit(run, tasks)
        if run.total == 0:
            self.close_run(run)

    def _set_deadline(self, run: Run, deadline_s: float | None) -> None:
        if deadline_s is not None:
            run.deadline_handle = self._loop.call_later(
                deadline_s, self.cancel_run, run, f"run deadline of {deadline_s}s passed"
            )

    def add_tasks(self, run: Run, tasks: list[Task]) -> list[Task]:
        if run.done or run.status != "running":
            raise FanoutError(f"run {run.id} has finished; start a new run", run_id=run.id)
        self._planner.check(run.id, tasks, run.tasks, run.by_key)
        run.budget.check_tasks(tasks, self._settings.model)
        self._admit(run, tasks)
        if run.cancel_reason is not None:  # e.g. a `then` of a task that ended as it was cancelled
            for t in tasks:
                self.cancel_task(t, run.cancel_reason)
        return tasks

    def _admit(self, run: Run, tasks: list[Task]) -> None:
        # a spec is taken before binding fills in defaults: a resume applies its own
        spec = self._task_spec
        specs = [spec(t) for t in tasks] if spec is not None else None
        lanes = self.attach(run, tasks)
        self._journal.append(StoreTasksAdded(run.id, tasks, specs))
        now = self._loop.time()
        run.bus.emit(TasksAdded(now, run.id, len(tasks), run.total, lanes))
        self.release(tasks, now)

    def attach(self, run: Run, tasks: list[Task]) -> dict[str, int]:
        """Number, bind and register `tasks` in `run`; returns how many each lane got."""
        base = len(run.tasks)
        lanes: dict[str, int] = {}
        bind = self._planner.bind
        for i, t in enumerate(tasks):
            t.run = run
            t.n = base + i
            t.state = WAITING
            lane = bind(t)
            lanes[lane] = lanes.get(lane, 0) + 1
            if t.has_explicit_key:
                run.by_key[t.key] = t
        run.tasks.extend(tasks)
        run.results_by_n.extend([None] * len(tasks))
        return lanes

    def adopt(
        self,
        run: Run,
        tasks: list[Task],
        ops: list[Op],
        loaded: Mapping[int, Result],
        tries: Mapping[int, int],
        deadline_s: float | None = None,
        fresh: Collection[int] = (),
        free: Mapping[int, int] | None = None,
        lanes: Mapping[str, int] | None = None,
    ) -> None:
        """Go on with a resumed `run` (its tasks attached): `ops` record the resume, `loaded`
        are the stored results kept, `tries` the attempts each task had made; those in `fresh`
        begin their attempt counts anew; `free` counts each task's calls that never reached
        the provider; `lanes`, all tasks by lane when `tasks` are not all (a lean resume)."""
        free = free or {}
        self._runs[run.id] = run
        self._set_deadline(run, deadline_s)
        for op in ops:
            self._journal.append(op)
        for t in tasks:
            t.tries = tries.get(t.n, 0)
            t.free_tries = t.tries if t.n in fresh else free.get(t.n, 0)
            r = loaded.get(t.n)
            if r is not None:
                t.state = r.state
                run.results_by_n[t.n] = r
                run.finished += 1
        now = self._loop.time()
        run.bus.emit(RunStarted(now, run.id, 0))
        lanes = dict(lanes or Counter(t.lane or DEFAULT_LANE for t in tasks))
        run.bus.emit(TasksAdded(now, run.id, run.total, run.total, lanes))
        self.release(tasks, now)
        if run.finished == run.total >= run.expected:  # (a streamed batch adds more)
            self.close_run(run)

    # -- readiness ------------------------------------------------------------------------

    def deps_of(self, t: Task) -> dict[str, Result]:
        results = run_of(t).results_by_n
        out: dict[str, Result] = {}
        for d in t.depends_on:
            assert isinstance(d, Task)
            r = results[d.n]
            if r is not None:
                out[d.key] = r
        return out

    def release(self, tasks: list[Task], now: float) -> None:
        """Link `tasks` to their dependencies; queue those that can start."""
        ready: list[Task] = []
        for t in tasks:
            if t.state.terminal:  # a resumed run's finished task
                continue
            t.span_kind = DEPS if t.depends_on else QUEUED  # (its first span opens)
            t.span_t0 = now
            left = 0
            failed_dep: Task | None = None
            for d in t.depends_on:
                assert isinstance(d, Task)
                if d.state.terminal:
                    if d.state is not DONE and failed_dep is None:
                        failed_dep = d
                else:
                    left += 1
                    if d.dependents is None:
                        d.dependents = []
                    d.dependents.append(t)
            t.deps_left = left
            if failed_dep is not None and t.on_dependency_failure == "skip":
                self._skip_for_dependency(t, failed_dep)
            elif left == 0:
                ready.append(t)
        for t in ready:
            self._make_ready(t, now)

    def _make_ready(self, t: Task, now: float) -> None:
        spans.close(t, now, QUEUED)  # (it may be queued already: then nothing changes)
        if t.when is not None:
            try:
                selected = t.when(self.deps_of(t))
            except Exception as exc:
                self.finalize(t, FAILED, ErrorInfo("permanent", "condition_error", repr(exc)))
                return
            if not selected:
                self.finalize(t, SKIPPED, ErrorInfo("dependency", "not_selected", "not selected"))
                return
        if run_of(t).interrupting:
            return  # stays waiting: a resume starts it
        gate = self._gate
        if gate is not None:
            try:
                keys = self.keys_of(t)
            except Exception as exc:  # a prompt callable that raises
                self.finalize(t, FAILED, ErrorInfo("permanent", "prompt_error", repr(exc)))
                return
            gate.admit(t, keys[0])
            return
        g = group_of(t)
        self._sched.push(t, g, now, 0.0 if g.plain else self._planner.prepare(t, g))

    def enqueue(self, t: Task) -> None:
        """Queue `t` to be sent (the cache gate found no answer for it)."""
        if run_of(t).interrupting:
            return
        g = group_of(t)
        self._sched.push(t, g, self._loop.time(), 0.0 if g.plain else self._planner.prepare(t, g))

    def keys_of(self, t: Task) -> tuple[bytes, bytes]:
        """The task's (cache key, request hash), computed once per process from its first
        request here (before any retry changes it)."""
        run = run_of(t)
        keys = run.keys.get(t.n)
        if keys is None:
            s = self._settings
            request = build_request(t, 1, s.model, s.max_tokens, self.deps_of(t))
            keys = run.keys[t.n] = request_keys(self._planner.provider_of(t), request, t)
        return keys

    def note_request(self, t: Task, request: Any) -> None:
        """An attempt is about to send `request` (the workers ask when `keeps_keys`): keep
        its keys if it is the task's first request here (the store records them)."""
        run = run_of(t)
        if t.n not in run.keys:
            run.keys[t.n] = request_keys(self._planner.provider_of(t), request, t)

    # -- attempts -------------------------------------------------------------------------

    def attempt_started(self, t: Task, attempt: int, now: float, lane: str) -> None:
        run = run_of(t)
        spans.leave_queue(t, now, spans.RUN)  # (its spans go with the attempt's end)
        self._journal.append(AttemptStarted(run.id, t.n, attempt, now + self._clock))
        run.bus.emit(TaskStarted(now, t, attempt, lane))  # a listener may cancel it

    def retry(
        self,
        t: Task,
        g: Group,
        attempt: int,
        now: float,
        duration: float,
        info: ErrorInfo,
        delay: float,
        *,
        charged: bool = True,
        first_token: float | None = None,
    ) -> None:
        """A failed attempt is retried after `delay` seconds (outside any slot), unless the
        run was cancelled meanwhile (the task ends cancelled) or is being interrupted (it
        waits for a resume). `charged`: whether it counts against the run's retry budget
        (not a call that never reached the provider, nor one stored `free`: m003)."""
        run = run_of(t)
        run.retries += int(charged)
        spans.close(t, now, spans.BACKOFF, attempt, info.kind, first_token)
        taken = spans.take(t, self._clock) if self._keep_spans else spans.drop(t)
        free = not charged and info.kind != "connection"
        self._journal.append(AttemptFailed(run.id, t.n, attempt, duration, info, taken, free))
        run.bus.emit(TaskRetrying(now, t, attempt, g.lane, duration, info, delay))
        if run.cancel_reason is not None:
            self.finalize(t, CANCELLED, ErrorInfo("cancelled", "cancelled", run.cancel_reason))
        elif run.interrupting:  # waits for a resume: another task leads its cache key
            t.state = WAITING
            if self._gate is not None and self._gate.leads(t):
                self._gate.abandon(t)
        else:
            self._sched.push_later(t, g, now + delay, self._planner.prepare(t, g))

    def attempt_interrupted(
        self, t: Task, attempt: int, now: float, lane: str, duration: float
    ) -> None:
        """An interrupt stopped the attempt: the task waits for a resume."""
        run = run_of(t)
        t.state = WAITING
        spans.close(t, now, "", attempt, "interrupted")
        taken = spans.take(t, self._clock) if self._keep_spans else spans.drop(t)
        self._journal.append(AttemptInterrupted(run.id, t.n, attempt, duration, taken))
        run.bus.emit(TaskInterrupted(now, t, attempt, lane, duration))
        if self._gate is not None and self._gate.leads(t):
            self._gate.abandon(t)

    def over_budget(self, t: Task, g: Group) -> None:
        """`t` would pass its run's cap. While other calls of the run are in flight it waits
        for one of them to settle (`budget_settled`); when none is, the run is out of budget:
        it starts nothing new and closes `budget_exhausted` (resumable with a higher cap)."""
        t.state = WAITING
        spans.leave_queue(t, self._loop.time(), spans.BUDGET)
        run = run_of(t)
        if run.budget.in_flight:
            self._parking.park(run, t, g)
            return
        run.budget.exhausted = True
        self._parking.drop(run)
        if not run.interrupting:
            self.interrupt(run, None)
        else:
            self.check_interrupted(run)

    def budget_settled(self, run: Run) -> None:
        """A call of `run` settled its estimate: parked tasks may try again (`Parking`)."""
        self._parking.settled(run, lambda t: t.state is WAITING and not self.settled(t))

    def limiter_paused(self, t: Task, now: float, key: str, limit: float, pause_s: float) -> None:
        run_of(t).emit(LimiterChanged(now, key, limit, pause_s))

    # -- results --------------------------------------------------------------------------

    def finalize(
        self,
        t: Task,
        state: TaskState,
        error: ErrorInfo | None,
        result: Result | None = None,
        duration: float = -1.0,
        cache: int = CACHE_NONE,
        first_token: float | None = None,
    ) -> None:
        """Record a terminal result; the task becomes terminal once it is durable.

        `duration` is that of the attempt that ended the task, -1 when none did;
        `first_token` when that attempt's first streamed chunk came (loop time)."""
        if result is None:
            result = Result(t, state, attempts=t.tries, error=error)
        spans.end(t, self._loop.time(), state, error, duration, first_token)
        taken = spans.take(t, self._clock) if self._keep_spans else spans.drop(t)
        t.ran_for = duration >= 0.0
        if t.state is READY:  # leave the ready queue or the retry timer at once
            t.state = WAITING
        run = run_of(t)
        run.results_by_n[t.n] = result
        keys = run.keys.pop(t.n, None) if run.keys else None
        if keys is None:
            op = ResultRecorded(run.id, t.n, result, duration, spans=taken)
        else:
            if cache == CACHE_NONE and self._gate is not None and state is DONE:
                cache = CACHE_STORE
            op = ResultRecorded(run.id, t.n, result, duration, keys[0], keys[1], cache, taken)
        self._journal.commit(op, t)

    def cache_hit(self, t: Task, result: Result) -> None:
        self.finalize(t, DONE, None, result, cache=CACHE_HIT)

    def settled(self, t: Task) -> bool:
        """Whether `t` has its result already (it may not be durable yet)."""
        return run_of(t).results_by_n[t.n] is not None

    def _skip_for_dependency(self, t: Task, dep: Task) -> None:
        r = run_of(dep).results_by_n[dep.n]
        why = r.error.message if r is not None and r.error is not None else str(dep.state)
        message = f"dependency {dep.key} {dep.state}: {why}"
        self.finalize(t, SKIPPED, ErrorInfo("dependency", "dependency_failed", message))

    def _on_durable(self, tasks: list[Task]) -> None:
        now = self._loop.time()
        gate = self._gate
        for t in tasks:
            run = run_of(t)
            result = run.results_by_n[t.n]
            assert result is not None
            t.state = result.state
            run.finished += 1
            duration = result.latency_s if t.ran_for else -1.0
            run.bus.emit(
                TaskFinished(now, t, result.state, t.lane or DEFAULT_LANE, duration, result)
            )
            if gate is not None and gate.leading:
                gate.on_durable(t, result)
            deps = t.dependents
            if deps:
                t.dependents = None
                ok = result.state is DONE
                for d in deps:
                    if d.state is not WAITING or run.results_by_n[d.n] is not None:
                        continue
                    if not ok and d.on_dependency_failure == "skip":
                        self._skip_for_dependency(d, t)
                        continue
                    d.deps_left -= 1
                    if d.deps_left == 0:
                        self._make_ready(d, now)
            if t.then is not None and result.state is DONE:
                try:
                    more = t.then(result)
                    if more:
                        self.add_tasks(run, list(more))
                except Exception as exc:
                    run.callback_errors.append(f"{t.key}: then() raised {exc!r}")
            if run.finished == run.total:
                self.close_run(run)

    def close_run(self, run: Run, status: str | None = None) -> None:
        if run.status != "running":
            return
        m = run.metrics_
        if status is None:
            failed = m.states[FAILED] or m.states[CANCELLED]
            status = "failed" if failed else "done"
            status = "cancelled" if run.cancel_reason is not None else status
        run.status = status
        self._parking.drop(run)
        if run.deadline_handle is not None:
            run.deadline_handle.cancel()
        if run.grace_handle is not None:
            run.grace_handle.cancel()
        now = self._loop.time()
        run.bus.emit(RunFinished(now, run.id, status, run.counts()))
        wall = (m.ended_at or 0.0) - (m.started_at or 0.0)
        self._journal.append(self._sampler.sample(run, now))
        self._sampler.forget(run)
        self._journal.append(RunClosed(run.id, status, time.time(), wall, peak_rss_mb()))
        run.bus.close()

        async def settle() -> None:
            await self._journal.flush()
            run.resolve()

        task = self._loop.create_task(settle())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- stopping -------------------------------------------------------------------------

    def interrupt(self, run: Run, grace_s: float | None = None) -> None:
        """Start nothing new in `run`; let running calls finish, stopping those still
        running after `grace_s` (None: wait for them; 0: stop them now). Unfinished tasks
        get no result: the run ends "interrupted" and `resume` goes on with them."""
        if run.done or run.status != "running":
            return
        if not run.interrupting:
            run.interrupting = True
            gate = self._gate
            for t in run.live_tasks():
                if t.state is READY:  # leaves the ready queue or the retry timer
                    t.state = WAITING
                if gate is not None and gate.leads(t) and t.state is not RUNNING:
                    gate.abandon(t)
        if grace_s is not None:
            if run.grace_handle is not None:
                run.grace_handle.cancel()
            run.grace_handle = self._loop.call_later(grace_s, self.stop_running, run)
        self.check_interrupted(run)

    def stop_running(self, run: Run) -> None:
        self._slots.stop_run(run, INTERRUPT)

    def check_interrupted(self, run: Run) -> None:
        """Close an interrupted run once none of its attempts is running."""
        if not run.interrupting or run.status != "running" or run.cancel_reason is not None:
            return
        if not self._slots.running(run):
            self.close_run(run, "budget_exhausted" if run.budget.exhausted else "interrupted")

    def cancel_run(self, run: Run, reason: str) -> None:
        if run.done or run.cancel_reason is not None:
            return
        run.cancel_reason = reason
        for t in run.live_tasks():
            self.cancel_task(t, reason)
        if run.finished == run.total:
            self.close_run(run)

    def cancel_task(self, task: Task, reason: str) -> bool:
        if task.state.terminal or self.settled(task):
            return False
        if task.state is RUNNING:
            return self._slots.stop_task(task, reason)
        self.finalize(task, CANCELLED, ErrorInfo("cancelled", "cancelled", reason))
        return True

    def _on_store_error(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        self.fatal = exc
        for run in self._runs.values():
            if not run.done:
                reason = getattr(exc, "message", None) or f"the run store failed: {exc!r}"
                run.fail(reason, FanoutError(reason, run_id=run.id))
        self._slots.stop_all("the run store failed")  # no result can be recorded any more

    # -- the store, for runs and sinks ----------------------------------------------------

    def ack(self, run: Run, sink: str, position: int) -> None:
        self._journal.append(SinkAcked(run.id, sink, position))

    def heartbeat(self, run: Run, owner: str, now: float, until: float) -> None:
        self._journal.append(Heartbeat(run.id, owner, now, until))

    def sample(self, now: float) -> None:
        """A `samples` row per live run, when one is due (the workers' ticker asks)."""
        if self._sampler.due(now):
            for run in self.live_runs():
                self._journal.append(self._sampler.sample(run, now))

    async def stored_results(self, run: Run) -> list[Result]:
        return await self._store.results(run.id, None if run.forgotten else run.live_tasks())

    async def sink_position(self, run: Run, sink: str) -> int:
        return await self._store.sink_position(run.id, sink)

    # -- backpressure ---------------------------------------------------------------------

    @property
    def backlogged(self) -> bool:
        """Whether more ops wait for the store than one batch holds."""
        return self._journal.pending > MAX_BATCH_OPS

    async def give_way(self) -> None:
        """Wait for the store when it is far behind (memory stays bounded), else yield."""
        if self._journal.pending > HIGH_WATER_OPS:
            await self._journal.room()
        else:
            await asyncio.sleep(0)
