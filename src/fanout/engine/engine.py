"""The engine: a fixed pool of workers running the tasks of any number of runs.

One worker is one slot of the global concurrency limit. A free worker asks the scheduler
for the best task whose lane, agent and provider meters have room, makes one attempt, and
hands the outcome to the journal; it never waits for the store. A failed attempt that will
be retried goes back to the scheduler with a backoff delay, so the wait is spent outside
any slot. A task is done only when its result is durable: then its event fires, dependents
may start and its `then` callback may add tasks.
"""

from __future__ import annotations

import asyncio
import math
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from fanout.engine.events import (
    LimiterChanged,
    RunFinished,
    RunStarted,
    TaskFinished,
    TaskInterrupted,
    TaskRetrying,
    TasksAdded,
    TaskSlow,
    TaskStarted,
)
from fanout.engine.limits import (
    ERROR,
    OK,
    RATE_LIMITED,
    ConcurrencyMeter,
    Meter,
    ProviderLimits,
    ProviderMeter,
)
from fanout.engine.plan import plan
from fanout.engine.request import (
    body_max_tokens,
    build_request,
    check_completion,
    estimate,
)
from fanout.engine.retry import RetryPolicy, describe
from fanout.engine.run import Run
from fanout.engine.scheduler import Group, Scheduler
from fanout.errors import (
    ConfigError,
    FanoutError,
    InvalidOutput,
    Overloaded,
    PlanError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    TruncatedOutput,
)
from fanout.providers.base import Completion, Provider, Request
from fanout.store.base import (
    CACHE_NONE,
    CACHE_STORE,
    AttemptFailed,
    AttemptInterrupted,
    AttemptStarted,
    MemoryStore,
    ResultRecorded,
    RunClosed,
    RunOpened,
    SinkAcked,
    Store,
)
from fanout.store.base import (
    TasksAdded as StoreTasksAdded,
)
from fanout.store.journal import HIGH_WATER_OPS, MAX_BATCH_OPS, Journal
from fanout.tasks import ErrorInfo, Result, Task, TaskState

DEFAULT_CONCURRENCY = 16
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_TOKENS = 1024
DEFAULT_AGING_S = 60.0
DEFAULT_LANE = "default"
DEFAULT_CACHE_TTL_S = 30 * 86400.0
DEFAULT_AGENT = "default"
INF = math.inf
TICK_S = 0.25  # slow-task checks and a safety wake-up for parked workers
YIELD_EVERY = 64  # a worker whose calls finish without yielding gives way this often

RUNNING = TaskState.RUNNING
READY = TaskState.READY
WAITING = TaskState.WAITING
DONE = TaskState.DONE
FAILED = TaskState.FAILED
SKIPPED = TaskState.SKIPPED
CANCELLED = TaskState.CANCELLED

Order = Literal["fifo", "longest_first"]

if TYPE_CHECKING:
    from fanout.engine.cache import CacheGate


class _Slot:
    """What one worker is doing: lets deadlines, cancellation and slow-task checks reach
    the call in flight. An attempt is aborted by cancelling the worker's asyncio task with
    `abort` set, which the worker turns back into an ordinary outcome (`uncancel`)."""

    __slots__ = ("abort", "deadline", "idle", "slow_reported", "started", "task", "worker")

    def __init__(self) -> None:
        self.task: Task | None = None
        self.worker: asyncio.Task[None] | None = None
        self.started = 0.0
        self.deadline = INF  # loop time at which the attempt times out
        self.idle = False  # the deadline is a stream's idle timeout
        self.abort: str | None = None  # "timeout" or a cancellation reason
        self.slow_reported = False


class Engine:
    """Runs tasks concurrently under limits. Use as `async with Engine(...) as engine:`.

    Limits are keyword-only: `concurrency` (workers, the global cap), `lanes` (lane ->
    limit), `agent_lanes` (agent -> lane), `agent_limits` (agent -> limit inside its lane),
    `limits` (provider name or "provider:model" -> `ProviderLimits`). `order` is "fifo" or
    "longest_first" (by `Task.expected_s`, the agent's `expected_s`, or its observed mean).
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider] | Provider | None = None,
        provider: str | None = None,
        model: str = "sim-1",
        concurrency: int = DEFAULT_CONCURRENCY,
        lanes: Mapping[str, int] | None = None,
        agent_lanes: Mapping[str, str] | None = None,
        agent_limits: Mapping[str, int] | None = None,
        limits: Mapping[str, ProviderLimits] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
        idle_timeout: float | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        aging_s: float = DEFAULT_AGING_S,
        order: Order = "fifo",
        expected_s: Mapping[str, float] | None = None,
        slow_after_s: float | None = None,
        store: Store | None = None,
        cache: bool = False,
        cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S,
        seed: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConfigError(f"concurrency={concurrency}: must be at least 1")
        if order not in ("fifo", "longest_first"):
            raise ConfigError(f"order={order!r}: use 'fifo' or 'longest_first'")
        if timeout is not None and timeout <= 0:
            raise ConfigError(f"timeout={timeout}: must be positive (or None for none)")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ConfigError(f"idle_timeout={idle_timeout}: must be positive")
        if aging_s <= 0:
            raise ConfigError(f"aging_s={aging_s}: must be positive")
        if cache_ttl_s is not None and cache_ttl_s <= 0:
            raise ConfigError(f"cache_ttl_s={cache_ttl_s}: must be positive (or None: no expiry)")
        if providers is None:
            from fanout.providers.sim import SimProvider

            providers = {"sim": SimProvider()}
        elif not isinstance(providers, Mapping):
            providers = {providers.name: providers}
        if not providers:
            raise ConfigError("no provider given")
        self.providers: dict[str, Provider] = dict(providers)
        self.default_provider = provider or next(iter(self.providers))
        if self.default_provider not in self.providers:
            raise ConfigError(
                f"provider {self.default_provider!r} is not configured "
                f"(configured: {', '.join(sorted(self.providers))})"
            )
        self.model = model
        self.concurrency = concurrency
        self.lanes = dict(lanes or {})
        for name, lim in self.lanes.items():
            if lim < 1:
                raise ConfigError(f"lane {name!r}: limit {lim} must be at least 1")
        self.agent_lanes = dict(agent_lanes or {})
        self.agent_limits = dict(agent_limits or {})
        self.limits = dict(limits or {})
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.max_tokens = max_tokens
        self.aging_s = aging_s
        self.order: Order = order
        self.expected = dict(expected_s or {})
        self.slow_after_s = slow_after_s
        self.store: Store = store if store is not None else MemoryStore()
        # a store that outlives the process keeps task specs and cache keys (for resume)
        self._persistent = bool(getattr(self.store, "persistent", False))
        self.cache = cache
        self.cache_ttl_s = cache_ttl_s
        self._gate: CacheGate | None = None
        self.owner = secrets.token_hex(8)  # this engine's name on the runs it leases
        self._watcher: asyncio.Task[None] | None = None
        self._request_keys: Any = None  # fanout.engine.cache.request_keys, when used
        self._task_spec: Any = None  # fanout.store.spec.task_spec, when used
        self.rng = random.Random(seed)
        self._observed: dict[str, float] = {}  # agent -> EWMA of attempt latency
        self._lane_meters: dict[str, ConcurrencyMeter] = {}
        self._agent_meters: dict[str, ConcurrencyMeter] = {}
        self.provider_meters: dict[str, ProviderMeter] = {}
        self._groups: dict[tuple[str, str, str], Group] = {}
        self._runs: dict[str, Run] = {}
        self._slots: list[_Slot] = []
        self._workers: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._sched: Scheduler | None = None
        self._journal: Journal[Task] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fatal: BaseException | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._deadline_timer: asyncio.TimerHandle | None = None
        self._deadline_at = INF
        self._closed = False
        self._clock = 0.0

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._loop is not None:
            return
        loop = self._loop = asyncio.get_running_loop()
        self._clock = time.time() - loop.time()  # loop time + this = unix time
        self._sched = Scheduler(aging_s=self.aging_s, loop=loop)
        self._journal = Journal(self.store, self._on_durable, self._on_store_error)
        self._journal.start()
        for i in range(self.concurrency):
            slot = _Slot()
            self._slots.append(slot)
            slot.worker = loop.create_task(self._worker(slot), name=f"fanout-worker-{i}")
            self._workers.append(slot.worker)
        self._ticker = loop.create_task(self._tick(), name="fanout-ticker")
        # the store's and the cache's machinery is imported only by engines that use it
        if self.cache:
            from fanout.engine.cache import CacheGate

            self._gate = CacheGate(self, self.cache_ttl_s)
            self._gate.start()
        if self._persistent:
            from fanout.engine.cache import request_keys
            from fanout.engine.watch import watch
            from fanout.store.spec import task_spec

            self._request_keys = request_keys
            self._task_spec = task_spec
            self._watcher = loop.create_task(watch(self), name="fanout-watch")
        elif self.cache:
            from fanout.engine.cache import request_keys

            self._request_keys = request_keys

    async def aclose(self) -> None:
        """Cancel unfinished runs, stop the workers, make everything durable."""
        if self._closed or self._loop is None:
            self._closed = True
            return
        interrupted = []
        for run in list(self._runs.values()):
            if run.done:
                continue
            if run.interrupting:  # stop what runs now; the run stays resumable
                self._stop_running(run)
                interrupted.append(run)
            else:
                self.cancel_run(run, "the engine was closed")
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.gather(self._watcher, return_exceptions=True)
        if self._gate is not None:
            await self._gate.aclose()
        if interrupted:  # let the stopped attempts record themselves (bounded: 1 s)
            for _ in range(100):
                if not any(s.task is not None and s.task.run.interrupting for s in self._slots):
                    break
                await asyncio.sleep(0.01)
            for run in interrupted:
                self._close_run(run, "interrupted")
        self._closed = True
        assert self._sched is not None and self._journal is not None
        self._sched.close()
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
        for w in self._workers:
            w.cancel()
        if self._ticker is not None:
            self._ticker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        if self._ticker is not None:
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._fatal is None:
            await self._journal.flush()
        await self._journal.aclose()
        for p in self.providers.values():
            await p.aclose()
        await self.store.close()

    # -- submitting -----------------------------------------------------------------------

    def submit(
        self,
        tasks: Iterable[Task],
        *,
        kind: str = "tasks",
        run_id: str | None = None,
        deadline_s: float | None = None,
        retry_budget: int | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> Run:
        """Start a run of `tasks`; returns at once. Raises `PlanError` (nothing runs) on a
        dependency cycle, an unknown dependency or a duplicate key."""
        if self._loop is None or self._closed:
            raise FanoutError("the engine is not running: use `async with Engine(...)`")
        if self._fatal is not None:
            raise FanoutError(f"the run store failed: {self._fatal}")
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s={deadline_s}: must be positive")
        run_id = run_id or new_run_id()
        if run_id in self._runs:
            raise PlanError(f"a run with id {run_id!r} already exists", run_id=run_id)
        run = Run(self, run_id, kind=kind, retry_budget=retry_budget, config=config or {})
        task_list = list(tasks)
        # raises before anything is recorded
        plan(run, task_list, self.providers, self.default_provider)
        self._runs[run_id] = run
        assert self._journal is not None
        if self._persistent:
            self._journal.append(
                RunOpened(
                    run_id,
                    kind,
                    time.time(),
                    run.config,
                    _run_settings(self, task_list),
                    self.owner,
                    self.concurrency,
                )
            )
        else:
            self._journal.append(RunOpened(run_id, kind, time.time(), run.config))
        run.bus.emit(RunStarted(self._loop.time(), run_id, 0))
        if deadline_s is not None:
            run.deadline_handle = self._loop.call_later(
                deadline_s, self.cancel_run, run, f"run deadline of {deadline_s}s passed"
            )
        self._admit(run, task_list)
        if run.total == 0:
            self._close_run(run)
        return run

    async def resume(
        self,
        run_id: str,
        tasks: Iterable[Task] | None = None,
        *,
        reconfigure: bool = False,
        blueprints: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
        retry_budget: int | None = None,
    ) -> Run:
        """Go on with a stored run (the engine needs a persistent store, e.g. `SqliteStore`).

        Finished tasks keep their stored results and are not sent again; the rest run.
        `tasks`: the run's tasks again (same keys), for tasks the store cannot rebuild
        (callable prompts, `when`/`then`); None rebuilds every task from the store, with
        `blueprints` for tasks made from agent blueprints. Raises `ConfigError` when the
        settings results depend on (providers, model, blueprints) changed, unless
        `reconfigure`: then the tasks whose request changed run again. Raises `RunBusy`
        while another live process runs it."""
        from fanout.engine.resume import resume_run

        return await resume_run(
            self,
            run_id,
            None if tasks is None else list(tasks),
            reconfigure=reconfigure,
            blueprints=blueprints,
            config=config,
            retry_budget=retry_budget,
        )

    async def run(self, tasks: Iterable[Task], **kwargs: Any) -> Run:
        """Submit and wait: the run is finished when this returns."""
        run = self.submit(tasks, **kwargs)
        await run.wait()
        return run

    def add_tasks(self, run: Run, tasks: list[Task]) -> list[Task]:
        if run.done or run.status != "running":
            raise FanoutError(f"run {run.id} has finished; start a new run", run_id=run.id)
        plan(run, tasks, self.providers, self.default_provider)
        self._admit(run, tasks)
        if run.cancel_reason is not None:  # e.g. a `then` of a task that ended as it was cancelled
            for t in tasks:
                self.cancel_task(t, run.cancel_reason)
        return tasks

    def _admit(self, run: Run, tasks: list[Task]) -> None:
        loop = self._loop
        assert loop is not None and self._journal is not None
        # a spec is taken before `_bind` fills in defaults: a resume applies its own
        spec = self._task_spec
        specs = [spec(t) for t in tasks] if spec is not None else None
        lanes = self._attach(run, tasks)
        self._journal.append(StoreTasksAdded(run.id, tasks, specs))
        now = loop.time()
        run.bus.emit(TasksAdded(now, run.id, len(tasks), run.total, lanes))
        self._release(tasks, now)

    def _attach(self, run: Run, tasks: list[Task]) -> dict[str, int]:
        """Number, bind and register `tasks` in `run`; returns how many each lane got."""
        base = len(run.tasks)
        lanes: dict[str, int] = {}
        for i, t in enumerate(tasks):
            t.run = run
            t._n = base + i
            t.state = WAITING
            self._bind(t)
            lanes[t.lane or DEFAULT_LANE] = lanes.get(t.lane or DEFAULT_LANE, 0) + 1
            if t.has_explicit_key:
                run.by_key[t.key] = t
        run.tasks.extend(tasks)
        run.results_by_n.extend([None] * len(tasks))
        return lanes

    def _release(self, tasks: list[Task], now: float) -> None:
        """Link `tasks` to their dependencies; queue those that can start."""
        ready: list[Task] = []
        for t in tasks:
            if t.state.terminal:  # a resumed run's finished task
                continue
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

    def _bind(self, t: Task) -> None:
        """Resolve provider, model, lane; attach the task to its scheduler group."""
        pname = t.provider or self.default_provider
        provider = self.providers[pname]
        t.provider = pname
        if t.model is None:
            t.model = str((t.body or {}).get("model") or self.model)
        agent = t.agent or DEFAULT_AGENT
        lane = t.lane or self.agent_lanes.get(agent) or DEFAULT_LANE
        t.lane = lane
        lkey = provider.limiter_key(t.model)
        gkey = (lane, agent, lkey)
        g = self._groups.get(gkey)
        if g is None:
            g = self._groups[gkey] = Group(
                gkey,
                self._meters_for(lane, agent, pname, t.model, lkey),
                lef=self.order == "longest_first",
            )
        t.group = g

    def _meters_for(self, lane: str, agent: str, pname: str, model: str, lkey: str) -> list[Meter]:
        meters: list[Meter] = []
        lim = self.lanes.get(lane)
        if lim is not None and lim < self.concurrency:
            m = self._lane_meters.get(lane)
            if m is None:
                m = self._lane_meters[lane] = ConcurrencyMeter(f"lane {lane}", lim)
            meters.append(m)
        alim = self.agent_limits.get(agent)
        if alim is not None:
            am = self._agent_meters.get(agent)
            if am is None:
                am = self._agent_meters[agent] = ConcurrencyMeter(f"agent {agent}", alim)
            meters.append(am)
        pm = self.provider_meters.get(lkey)
        if pm is None:
            plim = self.limits.get(f"{pname}:{model}") or self.limits.get(pname)
            plim = plim or ProviderLimits()
            pm = self.provider_meters[lkey] = ProviderMeter(
                lkey, plim, default_cap=self.concurrency
            )
        meters.append(pm)
        return meters

    # -- readiness, skipping, finishing ----------------------------------------------------

    def _deps_of(self, t: Task) -> dict[str, Result]:
        run: Run = t.run
        out: dict[str, Result] = {}
        for d in t.depends_on:
            assert isinstance(d, Task)
            r = run.results_by_n[d.n]
            if r is not None:
                out[d.key] = r
        return out

    def _make_ready(self, t: Task, now: float) -> None:
        if t.when is not None:
            try:
                selected = t.when(self._deps_of(t))
            except Exception as exc:
                self._finalize(t, FAILED, ErrorInfo("permanent", "condition_error", repr(exc)))
                return
            if not selected:
                self._finalize(t, SKIPPED, ErrorInfo("dependency", "not_selected", "not selected"))
                return
        if t.run.interrupting:
            return  # stays waiting: a resume starts it
        gate = self._gate
        if gate is not None:
            try:
                keys = self._keys_of(t)
            except Exception as exc:  # a prompt callable that raises
                self._finalize(t, FAILED, ErrorInfo("permanent", "prompt_error", repr(exc)))
                return
            gate.admit(t, keys[0])
            return
        g: Group = t.group
        if self.provider_meters[g.key[2]].tpm is not None and t.est_tokens < 0:
            t.est_tokens = estimate(t, self.max_tokens)
        assert self._sched is not None
        self._sched.push(t, g, now, self._expected_for(t) if g.lef else 0.0)

    def _enqueue(self, t: Task, now: float | None = None) -> None:
        """Queue `t` to be sent."""
        if t.run.interrupting:
            return
        g: Group = t.group
        if self.provider_meters[g.key[2]].tpm is not None and t.est_tokens < 0:
            t.est_tokens = estimate(t, self.max_tokens)
        assert self._sched is not None and self._loop is not None
        when = self._loop.time() if now is None else now
        self._sched.push(t, g, when, self._expected_for(t) if g.lef else 0.0)

    def _keys_of(self, t: Task) -> tuple[bytes, bytes]:
        """The task's (cache key, request hash), computed once per process from its first
        request here (before any retry changes it)."""
        run: Run = t.run
        keys = run.keys.get(t._n)
        if keys is None:
            request = build_request(
                t, 1, model=self.model, max_tokens=self.max_tokens, deps=self._deps_of(t)
            )
            provider = self.providers[t.provider or self.default_provider]
            keys = run.keys[t._n] = self._request_keys(provider, request, t)
        return keys

    def _expected_for(self, t: Task) -> float:
        if t.expected_s is not None:
            return t.expected_s
        agent = t.agent or DEFAULT_AGENT
        if agent in self.expected:
            return self.expected[agent]
        return self._observed.get(agent, 0.0)

    def _skip_for_dependency(self, t: Task, dep: Task) -> None:
        r = dep.run.results_by_n[dep._n]
        why = r.error.message if r is not None and r.error is not None else str(dep.state)
        self._finalize(
            t,
            SKIPPED,
            ErrorInfo(
                "dependency", "dependency_failed", f"dependency {dep.key} {dep.state}: {why}"
            ),
        )

    def _finalize(
        self,
        t: Task,
        state: TaskState,
        error: ErrorInfo | None,
        result: Result | None = None,
        duration: float = -1.0,
        cache: int = CACHE_NONE,
    ) -> None:
        """Record a terminal result; the task becomes terminal once it is durable.

        `duration` is that of the attempt that ended the task, -1 when none did."""
        if result is None:
            result = Result(t, state, attempts=t.tries, error=error)
        t.ran_for = duration >= 0.0
        if t.state is READY:  # leave the ready queue or the retry timer at once
            t.state = WAITING
        run: Run = t.run
        run.results_by_n[t._n] = result
        assert self._journal is not None
        keys = run.keys.pop(t._n, None) if run.keys else None
        if keys is None:
            op = ResultRecorded(run.id, t._n, result, duration)
        else:
            if cache == CACHE_NONE and self._gate is not None and state is DONE:
                cache = CACHE_STORE
            op = ResultRecorded(run.id, t._n, result, duration, keys[0], keys[1], cache)
        self._journal.commit(op, t)

    def _on_durable(self, tasks: list[Task]) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        gate = self._gate
        for t in tasks:
            run: Run = t.run
            result = run.results_by_n[t._n]
            assert result is not None
            t.state = result.state
            run.finished += 1
            duration = result.latency_s if t.ran_for else -1.0
            run.bus.emit(
                TaskFinished(now, t, result.state, t.lane or DEFAULT_LANE, duration, result)
            )
            if gate is not None and gate.led:
                gate.on_durable(t, result)
            deps = t.dependents
            if deps:
                t.dependents = None
                ok = result.state is DONE
                for d in deps:
                    if d.state is not WAITING or run.results_by_n[d._n] is not None:
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
                self._close_run(run)

    def _close_run(self, run: Run, status: str | None = None) -> None:
        if run.status != "running":
            return
        m = run.metrics_
        if status is not None:
            pass
        elif run.cancel_reason is not None:
            status = "cancelled"
        elif m.states[FAILED] or m.states[CANCELLED]:
            status = "failed"
        else:
            status = "done"
        run.status = status
        if run.deadline_handle is not None:
            run.deadline_handle.cancel()
        if run.grace_handle is not None:
            run.grace_handle.cancel()
        assert self._journal is not None and self._loop is not None
        run.bus.emit(RunFinished(self._loop.time(), run.id, status, run.counts()))
        wall = (m.ended_at or 0.0) - (m.started_at or 0.0)
        self._journal.append(RunClosed(run.id, status, time.time(), wall))
        run.bus.close()

        async def _settle() -> None:
            assert self._journal is not None
            await self._journal.flush()
            run._resolve()

        task = self._loop.create_task(_settle())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- interrupting: stop starting, let what runs finish, stay resumable ------------------

    def interrupt(self, run: Run, grace_s: float | None = None) -> None:
        """Start nothing new in `run`; let running calls finish, stopping those still
        running after `grace_s` (None: wait for them; 0: stop them now). Unfinished tasks
        get no result: the run ends "interrupted" and `resume` goes on with them."""
        if run.done or run.status != "running":
            return
        assert self._loop is not None
        if not run.interrupting:
            run.interrupting = True
            gate = self._gate
            for t in run.tasks:
                if t.state is READY:  # leaves the ready queue or the retry timer
                    t.state = WAITING
                if gate is not None and t in gate.led and t.state is not RUNNING:
                    gate.abandon(t)
        if grace_s is not None:
            if run.grace_handle is not None:
                run.grace_handle.cancel()
            run.grace_handle = self._loop.call_later(grace_s, self._stop_running, run)
        self._check_interrupted(run)

    def _stop_running(self, run: Run) -> None:
        for slot in self._slots:
            t = slot.task
            if t is not None and t.run is run and slot.abort is None and slot.worker is not None:
                slot.abort = _INTERRUPT
                if slot.worker is not asyncio.current_task():
                    slot.worker.cancel()

    def _check_interrupted(self, run: Run) -> None:
        """Close an interrupted run once none of its attempts is running."""
        if not run.interrupting or run.status != "running" or run.cancel_reason is not None:
            return
        for slot in self._slots:
            if slot.task is not None and slot.task.run is run:
                return
        self._close_run(run, "interrupted")

    def _on_store_error(self, exc: BaseException) -> None:
        if isinstance(exc, asyncio.CancelledError):
            return
        self._fatal = exc
        for run in self._runs.values():
            if not run.done:
                run.status = "failed"
                run.cancel_reason = f"the run store failed: {exc!r}"
                run._done.set_exception(FanoutError(run.cancel_reason, run_id=run.id))
                run._done.exception()  # mark retrieved; wait() re-raises it
        for slot in self._slots:  # stop spending: no result can be recorded any more
            if slot.task is not None and slot.abort is None and slot.worker is not None:
                slot.abort = "the run store failed"
                slot.worker.cancel()

    # -- cancelling -----------------------------------------------------------------------

    def cancel_run(self, run: Run, reason: str) -> None:
        if run.done or run.cancel_reason is not None:
            return
        run.cancel_reason = reason
        for t in run.tasks:
            self.cancel_task(t, reason)
        if run.finished == run.total:
            self._close_run(run)

    def cancel_task(self, t: Task, reason: str) -> bool:
        if t.state.terminal or t.run.results_by_n[t._n] is not None:
            return False
        if t.state is RUNNING:
            for slot in self._slots:
                if slot.task is t and slot.abort is None and slot.worker is not None:
                    slot.abort = reason
                    if slot.worker is not asyncio.current_task():  # else: before the call
                        slot.worker.cancel()
                    return True
            return False
        self._finalize(t, CANCELLED, ErrorInfo("cancelled", "cancelled", reason))
        return True

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, slot: _Slot) -> None:
        sched = self._sched
        loop = self._loop
        journal = self._journal
        assert sched is not None and loop is not None and journal is not None
        n = 0
        # not `while True`: an attempt aborted by aclose() swallows its cancel
        while not self._closed and self._fatal is None:
            picked = sched.pick(loop.time())
            if picked is None:
                await sched.wait()
                continue
            t = picked[0]
            await self._attempt(t, picked[1], slot)
            if t.run.interrupting:
                self._check_interrupted(t.run)
            n += 1
            if n % YIELD_EVERY == 0 or journal.pending > MAX_BATCH_OPS:
                if journal.pending > HIGH_WATER_OPS:
                    await journal.room()
                else:
                    await asyncio.sleep(0)

    async def _attempt(self, t: Task, g: Group, slot: _Slot) -> None:
        loop = self._loop
        journal = self._journal
        assert loop is not None and journal is not None
        run: Run = t.run
        t.state = RUNNING
        t.tries += 1
        attempt = t.tries
        t0 = loop.time()
        journal.append(AttemptStarted(run.id, t._n, attempt, t0 + self._clock))
        provider = self.providers[t.provider or self.default_provider]
        timeout = t.timeout if t.timeout is not None else self.timeout
        completion: Completion | None = None
        error: BaseException | None = None
        data: Any = None
        slot.task = t
        slot.started = t0
        slot.abort = None
        slot.slow_reported = False
        slot.idle = False
        if timeout is not None:
            self._set_deadline(slot, t0 + timeout)
        run.bus.emit(TaskStarted(t0, t, attempt, g.lane))  # a listener may cancel it
        try:
            if slot.abort is not None:
                raise _Aborted(slot.abort)
            request = build_request(
                t, attempt, model=self.model, max_tokens=self.max_tokens, deps=self._deps_of(t)
            )
            if self._persistent and t._n not in run.keys:  # its first request here
                run.keys[t._n] = self._request_keys(provider, request, t)
            if provider.streams and self.idle_timeout is not None:
                completion = await self._stream(provider, request, slot, t0, timeout)
            else:
                completion = await provider.complete(request)
            data = check_completion(t, completion)
        except asyncio.CancelledError:
            reason = _abort_reason(slot)
            if reason is None:  # the engine is closing
                slot.task = None
                raise
            worker = slot.worker
            assert worker is not None
            worker.uncancel()
            if reason == _TIMEOUT:
                slot.abort = None
                error = ProviderTimeout(
                    f"no data for {self.idle_timeout}s"
                    if slot.idle
                    else f"no answer within {timeout}s"
                )
            else:
                error = _Aborted(reason)
        except Exception as exc:
            error = exc
        slot.task = None
        slot.deadline = INF
        t1 = loop.time()
        duration = t1 - t0
        if error is None:
            assert completion is not None
            tokens = completion.input_tokens + completion.output_tokens
            for m in g.meters:
                m.finished(t1, t, OK, tokens)
            self._observe(t, duration)
            result = Result(
                t,
                DONE,
                text=completion.text,
                data=data,
                finish_reason=completion.finish_reason,
                model=completion.model or t.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                attempts=attempt,
                latency_s=duration,
            )
            self._finalize(t, DONE, None, result, duration)
            return
        rate_limited = isinstance(error, RateLimited | Overloaded)
        for m in g.meters:
            m.finished(t1, t, RATE_LIMITED if rate_limited else ERROR, 0)
        if isinstance(error, _Aborted):
            slot.abort = None
            if error.reason == _INTERRUPT:  # back to waiting, for a resume to start again
                t.state = WAITING
                journal.append(AttemptInterrupted(run.id, t._n, attempt, duration))
                run.bus.emit(TaskInterrupted(t1, t, attempt, g.lane, duration))
                if self._gate is not None and t in self._gate.led:
                    self._gate.abandon(t)
                return
            info = ErrorInfo("cancelled", "cancelled", error.reason)
            result = Result(t, CANCELLED, attempts=attempt, error=info, latency_s=duration)
            self._finalize(t, CANCELLED, info, result, duration)
            return
        info = describe(error)
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        if rate_limited and retry_after:
            pm = self.provider_meters[g.key[2]]
            pm.pause(t1, retry_after)
            run.bus.emit(LimiterChanged(t1, pm.key, pm.limit, retry_after))
        delay = self._retry_delay(t, run, error, info, retry_after)
        if delay is None:
            self._finalize(
                t,
                FAILED,
                info,
                Result(t, FAILED, attempts=attempt, error=info, latency_s=duration),
                duration,
            )
            return
        run.retries += 1
        journal.append(AttemptFailed(run.id, t._n, attempt, duration, info))
        run.bus.emit(TaskRetrying(t1, t, attempt, g.lane, duration, info, delay))
        assert self._sched is not None
        if run.cancel_reason is not None:  # cancelled while this attempt ran
            self._finalize(t, CANCELLED, ErrorInfo("cancelled", "cancelled", run.cancel_reason))
            return
        if run.interrupting:  # the retry waits for a resume
            t.state = WAITING
            return
        self._sched.push_later(t, g, t1 + delay, self._expected_for(t) if g.lef else 0.0)

    def _retry_delay(
        self,
        t: Task,
        run: Run,
        error: BaseException,
        info: ErrorInfo,
        retry_after: float | None,
    ) -> float | None:
        """Seconds until the next attempt, or None when the task has failed for good."""
        max_attempts = t.attempts if t.attempts is not None else self.retry.attempts
        if t.tries >= max_attempts or run.retries >= run.retry_budget:
            return None
        if info.error_class == "transient":
            return self.retry.backoff(t.tries, self.rng, retry_after)
        if info.error_class == "content" and not t.content_retried:
            t.content_retried = True
            if isinstance(error, TruncatedOutput):
                t.max_tokens = 2 * (t.max_tokens or body_max_tokens(t) or self.max_tokens)
            elif isinstance(error, InvalidOutput):
                t.retry_hint = info.message
            return 0.0
        return None

    def _observe(self, t: Task, duration: float) -> None:
        agent = t.agent or DEFAULT_AGENT
        prev = self._observed.get(agent)
        self._observed[agent] = duration if prev is None else prev * 0.8 + duration * 0.2

    async def _stream(
        self,
        provider: Provider,
        request: Request,
        slot: _Slot,
        t0: float,
        limit_s: float | None,
    ) -> Completion:
        """Consume a stream, failing when no chunk arrives within the idle timeout."""
        loop = self._loop
        assert loop is not None and self.idle_timeout is not None
        hard = INF if limit_s is None else t0 + limit_s
        idle = self.idle_timeout
        final: Completion | None = None
        parts: list[str] = []

        def rearm() -> None:
            nxt = loop.time() + idle
            slot.idle = nxt < hard
            self._set_deadline(slot, nxt if nxt < hard else hard)

        rearm()
        async for item in provider.stream(request):
            if isinstance(item, Completion):
                final = item
            else:
                parts.append(item.text)
                rearm()
        if final is None:
            final = Completion(text="".join(parts), model=request.model)
        return final

    # -- deadlines: one timer for all slots, armed at the earliest --------------------------

    def _set_deadline(self, slot: _Slot, when: float) -> None:
        slot.deadline = when
        if when < self._deadline_at:
            if self._deadline_timer is not None:
                self._deadline_timer.cancel()
            assert self._loop is not None
            self._deadline_at = when
            self._deadline_timer = self._loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        assert self._loop is not None
        self._deadline_timer = None
        self._deadline_at = INF
        now = self._loop.time()
        soonest = INF
        for slot in self._slots:
            d = slot.deadline
            if d <= now:
                if slot.task is not None and slot.abort is None and slot.worker is not None:
                    slot.abort = _TIMEOUT
                    slot.worker.cancel()
                slot.deadline = INF
            elif d < soonest:
                soonest = d
        if soonest < INF:
            self._deadline_at = soonest
            self._deadline_timer = self._loop.call_at(soonest, self._on_deadline)

    # -- the ticker: slow tasks, and a safety wake-up ------------------------------------------

    async def _tick(self) -> None:
        assert self._loop is not None and self._sched is not None
        while True:
            await asyncio.sleep(TICK_S)
            now = self._loop.time()
            if self.slow_after_s is not None:
                for slot in self._slots:
                    t = slot.task
                    if (
                        t is not None
                        and not slot.slow_reported
                        and (now - slot.started > self.slow_after_s)
                    ):
                        slot.slow_reported = True
                        t.run.bus.emit(TaskSlow(now, t, now - slot.started))
            if self._sched.ready:
                self._sched.wake_all()

    def ack(self, run: Run, sink: str, position: int) -> None:
        assert self._journal is not None
        self._journal.append(SinkAcked(run.id, sink, position))

    # -- introspection --------------------------------------------------------------------

    def get_run(self, run_id: str) -> Run:
        try:
            return self._runs[run_id]
        except KeyError:
            raise FanoutError(f"no run {run_id!r} in this engine", run_id=run_id) from None

    @property
    def runs(self) -> list[Run]:
        return list(self._runs.values())


_TIMEOUT = "\x00timeout"  # Slot.abort value for a deadline (cannot collide with a reason)
_INTERRUPT = "\x00interrupt"  # Slot.abort value for an interrupt's stop


def _abort_reason(slot: _Slot) -> str | None:
    # read through a call: the type checker cannot see that a cancel set it meanwhile
    return slot.abort


class _Aborted(Exception):
    """An attempt cancelled on purpose (run or task cancellation)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _run_settings(engine: Engine, tasks: list[Task]) -> dict[str, Any]:
    from fanout.engine.resume import run_settings

    return run_settings(engine, tasks)


def new_run_id() -> str:
    """A new run id: `r-` + month and day + 6 random hex digits."""
    return "r-" + time.strftime("%m%d") + secrets.token_hex(3)
