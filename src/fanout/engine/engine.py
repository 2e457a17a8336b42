"""`Engine`: the facade that puts the engine's parts together and runs any number of runs.

The parts, each owning its own state:
- `EngineSettings` (settings.py): every limit and default, checked once;
- `Planner` (plan.py): checks and binds tasks; owns the providers, groups and meters;
- `Scheduler` (scheduler.py): the ready structure, priorities and aging, backoff timers;
- `Slots` (slots.py): what each worker is doing; deadlines and aborts;
- `Ledger` (ledger.py): every state change, written to the journal and emitted as an event
  in one place; the owner every `Run` talks to;
- `Workers` (workers.py): the pool loop and one attempt;
- `CacheGate` (cache.py) and `Watcher` (watch.py) when the cache or a persistent store is on.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from fanout.engine.backend import Backend, LocalBackend
from fanout.engine.budget import DEFAULT_PRICES, Price, Prices, RunBudget
from fanout.engine.cache import CacheGate
from fanout.engine.ledger import Ledger, TaskSpec
from fanout.engine.limits import ProviderLimits, ProviderMeter
from fanout.engine.plan import Planner
from fanout.engine.retry import RetryPolicy
from fanout.engine.run import Run, run_of
from fanout.engine.scheduler import Scheduler
from fanout.engine.settings import (
    DEFAULT_AGING_S,
    DEFAULT_CACHE_TTL_S,
    DEFAULT_CONCURRENCY,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MODEL,
    DEFAULT_TIMEOUT_S,
    EngineSettings,
    Order,
)
from fanout.engine.slots import Slots
from fanout.engine.workers import Workers
from fanout.errors import ConfigError, FanoutError, PlanError
from fanout.providers.base import Provider
from fanout.store.base import MemoryStore, RunOpened, Store
from fanout.tasks import Task

if TYPE_CHECKING:
    from fanout.engine.watch import Watcher

#: how long `aclose` lets the attempts an interrupt stopped record themselves
CLOSE_GRACE_S = 1.0
CLOSE_POLL_S = 0.01


class Engine:
    """Runs tasks concurrently under limits. Use as `async with Engine(...) as engine:`.

    Limits are keyword-only: `concurrency` (workers, the global cap), `lanes` (lane ->
    limit), `agent_lanes` (agent -> lane), `agent_limits` (agent -> limit inside its lane),
    `limits` (provider name or "provider:model" -> `ProviderLimits`). `order` is "fifo" or
    "longest_first" (by `Task.expected_s`, the agent's `expected_s`, or its observed mean).
    Or give them all as `settings=EngineSettings(...)`. `backend` is where provider calls
    are executed: in this process (default), or `fanout.backends.ray.RayBackend(address)`.
    """

    def __init__(
        self,
        *,
        providers: Mapping[str, Provider] | Provider | None = None,
        provider: str | None = None,
        model: str = DEFAULT_MODEL,
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
        prices: Mapping[str, Price] | None = None,
        settings: EngineSettings | None = None,
        backend: Backend | None = None,
    ) -> None:
        if settings is None:
            settings = EngineSettings(
                provider=provider,
                model=model,
                concurrency=concurrency,
                lanes=dict(lanes or {}),
                agent_lanes=dict(agent_lanes or {}),
                agent_limits=dict(agent_limits or {}),
                limits=dict(limits or {}),
                retry=retry or RetryPolicy(),
                timeout=timeout,
                idle_timeout=idle_timeout,
                max_tokens=max_tokens,
                aging_s=aging_s,
                order=order,
                expected_s=dict(expected_s or {}),
                slow_after_s=slow_after_s,
                cache=cache,
                cache_ttl_s=cache_ttl_s,
                seed=seed,
                prices=dict(DEFAULT_PRICES if prices is None else prices),
            )
        if providers is None:
            from fanout.providers.sim import SimProvider

            providers = {"sim": SimProvider()}
        elif not isinstance(providers, Mapping):
            providers = {providers.name: providers}
        self.settings = settings
        self._planner = Planner(settings, providers)
        self._prices = Prices(settings.prices)
        self.store: Store = store if store is not None else MemoryStore()
        # a store that outlives the process keeps task specs and cache keys (for resume)
        self._persistent = bool(getattr(self.store, "persistent", False))
        self.owner = secrets.token_hex(8)  # this engine's name on the runs it leases
        #: where provider calls are executed (in this process unless told otherwise)
        self.backend: Backend = backend if backend is not None else LocalBackend()
        self._parts: _Parts | None = None
        self._closed = False

    # -- what the engine was given --------------------------------------------------------

    @property
    def providers(self) -> dict[str, Provider]:
        return self._planner.providers

    @property
    def default_provider(self) -> str:
        return self._planner.default_provider

    @property
    def concurrency(self) -> int:
        return self.settings.concurrency

    @property
    def model(self) -> str:
        return self.settings.model

    @property
    def limits(self) -> Mapping[str, ProviderLimits]:
        return self.settings.limits

    @property
    def provider_meters(self) -> dict[str, ProviderMeter]:
        """The provider budgets in use, by limiter key (read them; the engine sets them)."""
        return self._planner.provider_meters

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        if self._parts is not None:
            return
        # before any part starts: a backend that cannot start (a cluster that does not
        # answer) is one error, with nothing running
        await self.backend.start(self.providers, self.settings.concurrency)
        self._parts = _Parts(
            loop=asyncio.get_running_loop(),
            settings=self.settings,
            store=self.store,
            planner=self._planner,
            owner=self.owner,
            backend=self.backend,
        )

    async def aclose(self) -> None:
        """Cancel unfinished runs, stop the workers, make everything durable."""
        parts = self._parts
        if self._closed or parts is None:
            self._closed = True
            return
        ledger = parts.ledger
        interrupted = []
        for run in ledger.runs:
            if run.done:
                continue
            if run.interrupting:  # stop what runs now; the run stays resumable
                ledger.stop_running(run)
                interrupted.append(run)
            else:
                ledger.cancel_run(run, "the engine was closed")
        if parts.watcher is not None:
            await parts.watcher.aclose()
        if parts.gate is not None:
            await parts.gate.aclose()
        if interrupted:  # let the stopped attempts record themselves (bounded)
            for _ in range(int(CLOSE_GRACE_S / CLOSE_POLL_S)):
                if not any(parts.slots.running(r) for r in interrupted):
                    break
                await asyncio.sleep(CLOSE_POLL_S)
            for run in interrupted:
                ledger.close_run(run, "budget_exhausted" if run.budget.exhausted else "interrupted")
        self._closed = True
        parts.scheduler.close()
        parts.slots.close()
        await parts.workers.stop()
        for pm in self._planner.provider_meters.values():
            pm.close()  # (the account's lease: the next engine here must not wait for it)
        await ledger.aclose()
        await self.backend.aclose()
        for p in self.providers.values():
            await p.aclose()
        await self.store.close()

    def _running(self) -> _Parts:
        parts = self._parts
        if parts is None or self._closed:
            raise FanoutError("the engine is not running: use `async with Engine(...)`")
        return parts

    # -- runs -----------------------------------------------------------------------------

    def submit(
        self,
        tasks: Iterable[Task],
        *,
        kind: str = "tasks",
        run_id: str | None = None,
        deadline_s: float | None = None,
        retry_budget: int | None = None,
        config: Mapping[str, Any] | None = None,
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
    ) -> Run:
        """Start a run of `tasks`; returns at once. Raises `PlanError` (nothing runs) on a
        dependency cycle, an unknown dependency or a duplicate key. `max_cost_usd` and
        `max_tokens` cap what the run may spend (see `fanout.engine.budget`)."""
        parts = self._running()
        ledger = parts.ledger
        if ledger.fatal is not None:
            raise FanoutError(f"the run store failed: {ledger.fatal}")
        if parts.workers.crashed is not None:
            raise FanoutError(f"the engine stopped on an internal error: {parts.workers.crashed!r}")
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s={deadline_s}: must be positive")
        run_id = run_id or new_run_id()
        if ledger.get(run_id) is not None:
            raise PlanError(f"a run with id {run_id!r} already exists", run_id=run_id)
        s = self.settings
        budget = RunBudget(self._prices, max_cost_usd=max_cost_usd, max_tokens=max_tokens)
        run = Run(
            ledger,
            run_id,
            kind=kind,
            config=config or {},
            retry=s.retry,
            retry_budget=retry_budget,
            concurrency=s.concurrency,
            budget=budget,
        )
        task_list = list(tasks)
        self._planner.check(run_id, task_list)  # raises before anything is recorded
        budget.check_tasks(task_list, s.model)
        if self._persistent:
            opened = RunOpened(
                run_id,
                kind,
                time.time(),
                run.config,
                self._planner.result_settings(task_list),
                self.owner,
                s.concurrency,
            )
        else:
            opened = RunOpened(run_id, kind, time.time(), run.config)
        ledger.open(run, task_list, opened, deadline_s)
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
        deadline_s: float | None = None,
        retry_failed: bool | Collection[str] = False,
        max_cost_usd: float | None = None,
        max_tokens: int | None = None,
        lean: Collection[str] | None = None,
        expect: int = 0,
    ) -> Run:
        """Go on with a stored run (the engine needs a persistent store, e.g. `SqliteStore`).

        Finished tasks keep their stored results and are not sent again; the rest run.
        `tasks`: the run's tasks again (same keys), for tasks the store cannot rebuild
        (callable prompts, `when`/`then`); None rebuilds every task from the store, with
        `blueprints` for tasks made from agent blueprints. Raises `ConfigError` when the
        settings results depend on (providers, model, blueprints) changed, unless
        `reconfigure`: then the tasks whose request changed run again. Raises `RunBusy`
        while another live process runs it. `deadline_s` bounds this segment of the run.
        `retry_failed` runs failed tasks again too: all (True), or those whose error class or
        kind is named (e.g. {"transient"}), with their attempt counts begun anew. A cap
        (`max_cost_usd`, `max_tokens`) counts what the run spent before too.
        `lean` (with `tasks` None): load only the unfinished tasks, and of the finished ones
        those whose keys it names (e.g. those later tasks depend on); the others stay in the
        store, their slots in `run.tasks` empty, as if `Run.forget` had let them go
        (engine/resume_lean.py). For a run that holds its own work outside memory.
        `expect`: the tasks the run will have once its application has added the rest (a
        streamed batch): the run does not end while it has fewer."""
        parts = self._running()
        if deadline_s is not None and deadline_s <= 0:
            raise ConfigError(f"deadline_s={deadline_s}: must be positive")
        if not self._persistent:
            raise ConfigError(
                "resume needs a store that outlives the process: Engine(store=SqliteStore())"
            )
        from fanout.engine.resume import resume_run

        # what both resumes take; each gets a budget of its own (a lean resume that gives up
        # may have counted the run's spending into the one it was given)
        common: dict[str, Any] = {
            "ledger": parts.ledger,
            "planner": self._planner,
            "settings": self.settings,
            "store": self.store,
            "owner": self.owner,
            "run_id": run_id,
            "blueprints": blueprints,
            "config": config,
            "retry_budget": retry_budget,
            "deadline_s": deadline_s,
            "retry_failed": retry_failed,
            "expect": expect,
        }

        def budget() -> RunBudget:
            return RunBudget(self._prices, max_cost_usd=max_cost_usd, max_tokens=max_tokens)

        if lean is not None and tasks is None and parts.ledger.get(run_id) is None:
            from fanout.engine.resume_lean import resume_lean

            run = await resume_lean(**common, keep=lean, budget=budget())
            if run is not None:
                return run
        return await resume_run(
            **common,
            given=None if tasks is None else list(tasks),
            reconfigure=reconfigure,
            budget=budget(),
        )

    async def run(self, tasks: Iterable[Task], **kwargs: Any) -> Run:
        """Submit and wait: the run is finished when this returns."""
        run = self.submit(tasks, **kwargs)
        await run.wait()
        return run

    def interrupt(self, run: Run, grace_s: float | None = None) -> None:
        """Start nothing new in `run`; let running calls finish, stopping those still
        running after `grace_s` (None: wait for them; 0: stop them now). Unfinished tasks
        get no result: the run ends "interrupted" and `resume` goes on with them."""
        self._running().ledger.interrupt(run, grace_s)

    def cancel_run(self, run: Run, reason: str) -> None:
        self._running().ledger.cancel_run(run, reason)

    def cancel_task(self, t: Task, reason: str) -> bool:
        return self._running().ledger.cancel_task(t, reason)

    def get_run(self, run_id: str) -> Run:
        run = self._parts.ledger.get(run_id) if self._parts is not None else None
        if run is None:
            raise FanoutError(f"no run {run_id!r} in this engine", run_id=run_id)
        return run

    @property
    def runs(self) -> list[Run]:
        return self._parts.ledger.runs if self._parts is not None else []

    def forget(self, run: Run) -> None:
        """Let a finished run go (its tasks and results stay in the store): an engine that
        serves run after run (the service's) would otherwise keep every one in memory."""
        if self._parts is not None:
            self._parts.ledger.forget(run)


class _Parts:
    """The engine's running parts, built once its event loop is known."""

    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: EngineSettings,
        store: Store,
        planner: Planner,
        owner: str,
        backend: Backend,
    ) -> None:
        persistent = bool(getattr(store, "persistent", False))
        task_spec: TaskSpec | None = None
        if persistent:  # the store's machinery is imported only by engines that use it
            from fanout.store.spec import task_spec as spec

            task_spec = spec
        self.scheduler = Scheduler(aging_s=settings.aging_s, loop=loop)
        self.slots = Slots(loop)
        self.ledger = ledger = Ledger(
            loop=loop,
            settings=settings,
            store=store,
            planner=planner,
            scheduler=self.scheduler,
            slots=self.slots,
            task_spec=task_spec,
            keep_keys=persistent,
        )
        ledger.start()
        self.workers = Workers(
            loop=loop,
            settings=settings,
            planner=planner,
            scheduler=self.scheduler,
            slots=self.slots,
            ledger=ledger,
            backend=backend,
        )
        self.workers.start()
        self.gate: CacheGate | None = None
        if settings.cache:
            self.gate = CacheGate(
                ttl_s=settings.cache_ttl_s,
                lookup=store.cache_get,
                hit=ledger.cache_hit,
                send=ledger.enqueue,
                settled=ledger.settled,
                interrupting=lambda t: run_of(t).interrupting,
            )
            ledger.use_cache(self.gate)
            self.gate.start()
        self.watcher: Watcher | None = None
        if persistent:
            from fanout.engine.watch import Watcher

            self.watcher = Watcher(ledger, store, owner)
            self.watcher.start()


def new_run_id() -> str:
    """A new run id: `r-` + month and day + 6 random hex digits."""
    return "r-" + time.strftime("%m%d") + secrets.token_hex(3)
