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
import functools
import math
import random
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from fanout.engine.attempts import (
    INTERRUPT,
    TIMEOUT,
    Aborted,
    Slot,
    abort_reason,
    observe,
    retry_delay,
    set_deadline,
    stream,
)
from fanout.engine.events import (
    LimiterChanged,
    RunStarted,
    TaskInterrupted,
    TaskRetrying,
    TasksAdded,
    TaskSlow,
    TaskStarted,
)
from fanout.engine.finish import (
    cancel_run,
    cancel_task,
    check_interrupted,
    close_run,
    deps_of,
    expected_for,
    finalize,
    interrupt,
    on_durable,
    on_store_error,
    release,
    stop_running,
)
from fanout.engine.limits import (
    ERROR,
    OK,
    RATE_LIMITED,
    ConcurrencyMeter,
    ProviderLimits,
    ProviderMeter,
)
from fanout.engine.plan import DEFAULT_LANE, bind, plan
from fanout.engine.request import (
    build_request,
    check_completion,
)
from fanout.engine.retry import RetryPolicy, describe
from fanout.engine.run import Run
from fanout.engine.scheduler import Group, Scheduler
from fanout.engine.settings import (
    DEFAULT_AGING_S,
    DEFAULT_CACHE_TTL_S,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_TIMEOUT_S,
)
from fanout.errors import (
    ConfigError,
    FanoutError,
    Overloaded,
    PlanError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from fanout.providers.base import Completion, Provider
from fanout.store.base import (
    AttemptFailed,
    AttemptInterrupted,
    AttemptStarted,
    MemoryStore,
    RunOpened,
    SinkAcked,
    Store,
)
from fanout.store.base import (
    TasksAdded as StoreTasksAdded,
)
from fanout.store.journal import HIGH_WATER_OPS, MAX_BATCH_OPS, Journal
from fanout.tasks import ErrorInfo, Result, Task, TaskState

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
        self._slots: list[Slot] = []
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
        self._journal = Journal(
            self.store, functools.partial(on_durable, self), functools.partial(on_store_error, self)
        )
        self._journal.start()
        for i in range(self.concurrency):
            slot = Slot()
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
                stop_running(self, run)
                interrupted.append(run)
            else:
                cancel_run(self, run, "the engine was closed")
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
                close_run(self, run, "interrupted")
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
            close_run(self, run)
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
                cancel_task(self, t, run.cancel_reason)
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
        release(self, tasks, now)

    def _attach(self, run: Run, tasks: list[Task]) -> dict[str, int]:
        """Number, bind and register `tasks` in `run`; returns how many each lane got."""
        base = len(run.tasks)
        lanes: dict[str, int] = {}
        for i, t in enumerate(tasks):
            t.run = run
            t._n = base + i
            t.state = WAITING
            bind(self, t)
            lanes[t.lane or DEFAULT_LANE] = lanes.get(t.lane or DEFAULT_LANE, 0) + 1
            if t.has_explicit_key:
                run.by_key[t.key] = t
        run.tasks.extend(tasks)
        run.results_by_n.extend([None] * len(tasks))
        return lanes

    # -- stopping (engine/finish.py) ---------------------------------------------------------

    def interrupt(self, run: Run, grace_s: float | None = None) -> None:
        """Start nothing new in `run`; let running calls finish, stopping those still
        running after `grace_s` (None: wait for them; 0: stop them now). Unfinished tasks
        get no result: the run ends "interrupted" and `resume` goes on with them."""
        interrupt(self, run, grace_s)

    def cancel_run(self, run: Run, reason: str) -> None:
        cancel_run(self, run, reason)

    def cancel_task(self, t: Task, reason: str) -> bool:
        return cancel_task(self, t, reason)

    # -- workers --------------------------------------------------------------------------

    async def _worker(self, slot: Slot) -> None:
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
                check_interrupted(self, t.run)
            n += 1
            if n % YIELD_EVERY == 0 or journal.pending > MAX_BATCH_OPS:
                if journal.pending > HIGH_WATER_OPS:
                    await journal.room()
                else:
                    await asyncio.sleep(0)

    async def _attempt(self, t: Task, g: Group, slot: Slot) -> None:
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
            set_deadline(self, slot, t0 + timeout)
        run.bus.emit(TaskStarted(t0, t, attempt, g.lane))  # a listener may cancel it
        try:
            if slot.abort is not None:
                raise Aborted(slot.abort)
            deps = deps_of(self, t) if callable(t.prompt) else None
            request = build_request(t, attempt, self.model, self.max_tokens, deps)
            if self._persistent and t._n not in run.keys:  # its first request here
                run.keys[t._n] = self._request_keys(provider, request, t)
            if provider.streams and self.idle_timeout is not None:
                completion = await stream(self, provider, request, slot, t0, timeout)
            else:
                completion = await provider.complete(request)
            data = check_completion(t, completion)
        except asyncio.CancelledError:
            reason = abort_reason(slot)
            if reason is None:  # the engine is closing
                slot.task = None
                raise
            worker = slot.worker
            assert worker is not None
            worker.uncancel()
            if reason == TIMEOUT:
                slot.abort = None
                error = ProviderTimeout(
                    f"no data for {self.idle_timeout}s"
                    if slot.idle
                    else f"no answer within {timeout}s"
                )
            else:
                error = Aborted(reason)
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
            observe(self, t, duration)
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
            finalize(self, t, DONE, None, result, duration)
            return
        rate_limited = isinstance(error, RateLimited | Overloaded)
        for m in g.meters:
            m.finished(t1, t, RATE_LIMITED if rate_limited else ERROR, 0)
        if isinstance(error, Aborted):
            slot.abort = None
            if error.reason == INTERRUPT:  # back to waiting, for a resume to start again
                t.state = WAITING
                journal.append(AttemptInterrupted(run.id, t._n, attempt, duration))
                run.bus.emit(TaskInterrupted(t1, t, attempt, g.lane, duration))
                if self._gate is not None and t in self._gate.led:
                    self._gate.abandon(t)
                return
            info = ErrorInfo("cancelled", "cancelled", error.reason)
            result = Result(t, CANCELLED, attempts=attempt, error=info, latency_s=duration)
            finalize(self, t, CANCELLED, info, result, duration)
            return
        info = describe(error)
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        if rate_limited and retry_after:
            pm = self.provider_meters[g.key[2]]
            pm.pause(t1, retry_after)
            run.bus.emit(LimiterChanged(t1, pm.key, pm.limit, retry_after))
        delay = retry_delay(self, t, run, error, info, retry_after)
        if delay is None:
            finalize(
                self,
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
            finalize(self, t, CANCELLED, ErrorInfo("cancelled", "cancelled", run.cancel_reason))
            return
        if run.interrupting:  # the retry waits for a resume
            t.state = WAITING
            return
        self._sched.push_later(t, g, t1 + delay, expected_for(self, t) if g.lef else 0.0)

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


def _run_settings(engine: Engine, tasks: list[Task]) -> dict[str, Any]:
    from fanout.engine.resume import run_settings

    return run_settings(engine, tasks)


def new_run_id() -> str:
    """A new run id: `r-` + month and day + 6 random hex digits."""
    return "r-" + time.strftime("%m%d") + secrets.token_hex(3)
