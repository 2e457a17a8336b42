"""`ParallelAgentExecutor`: the original design's Python API (Story 8.14), on the launch
layer, so its executions are ordinary durable runs in the run store (`fanout runs`,
`fanout report` show them) and its config is the seed notes' `parallel_agents.yaml`."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fanout.config import Config, config_from, load_config, read_config_data
from fanout.config_legacy import SEED_SECTIONS, SeedSettings
from fanout.engine.events import Event, TaskFinished, TaskSlow
from fanout.engine.run import Run
from fanout.errors import ConfigError, FanoutError, InputError
from fanout.executor import views
from fanout.executor.tasks import to_tasks
from fanout.launch import EngineChoice, Finished, RunOptions, engine_setup, start
from fanout.tasks import TaskState

log = logging.getLogger("fanout.executor")

#: where the original system kept its config; used when it is there
DEFAULT_CONFIG = "config/parallel_agents.yaml"
#: what the run store calls an execution's runs (`fanout runs` shows it)
KIND = "executor"
#: `fanout.yaml` keys `configure_parallel_settings` takes as they are; any other key is one
#: of the seed file's `parallel_processing` keys
_FANOUT_KEYS = frozenset(Config.model_fields)


class _NoSink:
    """The facade writes no file: results stay in the store and in memory."""

    def attach(self, run: Run) -> None:
        pass

    async def finish(self, run: Run) -> None:
        return None

    def abort(self) -> None:
        pass


class ParallelAgentExecutor:
    """Runs batches of agent tasks in parallel (the seed notes' API).

    ```python
    executor = ParallelAgentExecutor("config/parallel_agents.yaml")
    eid = await executor.submit_batch_tasks([
        {"agent_name": "oral-explanation", "node_id": "n1",
         "node_content": "什么是逆否命题？", "canvas_path": "笔记库/离散数学.canvas"},
    ])
    print((await executor.get_execution_status(eid))["overall_status"])
    results = await executor.get_execution_results(eid)   # waits for the end
    ```
    Keyword arguments choose the provider as the CLI's flags do (`provider`, `model`,
    `base_url`, `sim_latency`, ...); `store_path` names the run store (default: the CLI's).
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = DEFAULT_CONFIG,
        *,
        provider: str | None = None,
        model: str | None = None,
        base_url: str | None = None,
        sim_latency: str | None = None,
        sim_faults: str | None = None,
        seed: int | None = None,
        store_path: str | os.PathLike[str] | None = None,
        cache: bool = False,
    ) -> None:
        path: Path | None = None
        if config_path is not None:
            path = Path(config_path)
            if str(config_path) == DEFAULT_CONFIG and not path.exists():
                path = None  # the original's default place, empty here: fanout's own lookup
        self._config = load_config(path)
        # the file as written, changed by configure_parallel_settings: each change is
        # checked as a whole file would be
        self._data: dict[str, Any] = {} if path is None else read_config_data(path)
        for note in self._config.notes:
            log.warning("%s: %s", self._config.source, note)
        self._choice = EngineChoice(
            config=self._config.source,
            provider=provider,
            model=model,
            base_url=base_url,
            sim_latency=sim_latency,
            sim_faults=sim_faults,
            seed=seed,
        )
        self._store_path = None if store_path is None else Path(store_path)
        self._cache = cache
        self._executions: dict[str, views.Execution] = {}
        self._finishing: dict[str, asyncio.Future[Finished[None]]] = {}
        self._noted = False

    @property
    def config(self) -> Config:
        """The settings in force (as changed by `configure_parallel_settings`)."""
        return self._config

    @property
    def _seed(self) -> SeedSettings:
        return self._config.seed_settings or SeedSettings()

    # -- the original's six methods ---------------------------------------------------------

    async def submit_batch_tasks(
        self, tasks: Sequence[Mapping[str, Any]], max_concurrent: int | None = None
    ) -> str:
        """Start `tasks` (the original's task dicts) as one execution; returns its id at
        once. `max_concurrent` (default: the config's `default_max_concurrent`) must lie in
        `min_concurrent..max_concurrent_limit`. Raises `InputError`/`ConfigError` for a bad
        task or setting, before anything runs."""
        seed = self._seed
        if max_concurrent is not None:
            _check_concurrency(max_concurrent, seed, self._config.source)
        choice = self._choice.updated(EngineChoice(concurrency=max_concurrent))
        setup = engine_setup(choice, self._config)
        made, origins = to_tasks(tasks, setup.blueprints, seed)
        if seed.max_queue_size is not None:
            waiting = sum(r.run.total - r.run.finished for r in self._executions.values())
            if waiting + len(made) > seed.max_queue_size:
                raise InputError(
                    f"the task queue holds at most {seed.max_queue_size} unfinished tasks "
                    f"(task_queue.max_queue_size) and {waiting} are waiting: submit "
                    f"{seed.max_queue_size - waiting} or fewer, or wait for an execution to end"
                )
        options = RunOptions(choice=choice, cache=self._cache, grace_s=0)
        stored = {"executor": {"tasks": len(made)}}
        launched = await start(
            made, _NoSink(), kind=KIND, config=stored, options=options, setup=setup,
            store_path=self._store_path,
        )  # fmt: skip
        run = launched.run
        if launched.note and not self._noted:
            log.warning("%s", launched.note)  # e.g. that the simulator answers
            self._noted = True
        ex = views.Execution(
            run=run,
            origins=origins,
            submitted_at=datetime.now(UTC).isoformat(timespec="seconds"),
            max_concurrent=int(setup.engine.get("concurrency") or 1),
            fallback_strategy="retry" if seed.continue_on_error else "fail",
        )
        self._executions[run.id] = ex
        run.listen(self._listener(ex, seed))
        fut = asyncio.ensure_future(launched.finish())
        fut.add_done_callback(lambda f: self._finished(ex, f, seed))
        self._finishing[run.id] = fut
        return run.id

    async def get_execution_status(self, execution_id: str) -> dict[str, Any]:
        """`overall_status` (running | completed | failed | cancelled), the `task_queue`
        counts and one `agent_execution_sessions` entry per task."""
        return views.status(self._get(execution_id))

    async def get_execution_results(
        self, execution_id: str, *, wait: bool = True
    ) -> dict[str, Any]:
        """Every task's result in submission order, with the original's aggregation
        (`result_aggregation.merged_results`: sub-questions merged, duplicates removed;
        scores summed up; outputs by node). Waits for the execution to end unless
        `wait=False` (then: what has finished so far)."""
        ex = self._get(execution_id)
        if wait:
            await self._wait(execution_id)
        return views.results(ex)

    async def cancel_execution(self, execution_id: str) -> bool:
        """Stop the execution: calls in flight are aborted, waiting ones never start.
        Returns once nothing of it runs; False when it had already ended."""
        ex = self._get(execution_id)
        if ex.run.done:
            return False
        ex.run.cancel("cancelled by cancel_execution()")
        await self._wait(execution_id)
        return True

    def get_performance_metrics(self, execution_id: str) -> dict[str, Any]:
        """The original's `performance_metrics` (parallel efficiency, resource use,
        throughput), live while it runs; the engine's own figures under `fanout`."""
        return views.performance(self._get(execution_id))

    def configure_parallel_settings(self, settings: Mapping[str, Any]) -> bool:
        """Change the settings of later submissions: keys of the seed file's
        `parallel_processing` section (`default_max_concurrent`, `agent_configs`, ...),
        a whole `{"parallel_processing": {...}}`, or `fanout.yaml` keys. Returns False (and
        logs why) when the result would not be a valid config; nothing changes then."""
        try:
            self._data, self._config = self._configured(settings)
        except FanoutError as exc:
            log.warning("configure_parallel_settings: %s", exc.message)
            return False
        return True

    # -- the rest ----------------------------------------------------------------------------

    def _configured(self, settings: Mapping[str, Any]) -> tuple[dict[str, Any], Config]:
        if not isinstance(settings, Mapping):
            raise ConfigError("settings must be a dict")
        data = copy.deepcopy(self._data)
        for key, value in settings.items():
            if key in SEED_SECTIONS and isinstance(value, Mapping):
                _merge(data.setdefault(key, {}), value)
            elif key in _FANOUT_KEYS:
                data[key] = _merged_value(data.get(key), value)
            else:
                section = data.setdefault("parallel_processing", {})
                section[key] = _merged_value(section.get(key), value)
        return data, config_from(data, path=self._config.source)

    def _get(self, execution_id: str) -> views.Execution:
        ex = self._executions.get(execution_id)
        if ex is None:
            raise FanoutError(
                f"no execution {execution_id!r} in this executor (see fanout runs for "
                "executions of other processes)"
            )
        return ex

    async def _wait(self, execution_id: str) -> None:
        fut = self._finishing[execution_id]
        await asyncio.shield(fut)

    def _listener(self, ex: views.Execution, seed: SeedSettings) -> Any:
        run = ex.run
        loop = asyncio.get_running_loop()

        def on_event(ev: Event) -> None:
            if isinstance(ev, TaskFinished) and ev.state is TaskState.FAILED:
                o = ex.origins[ev.task.n]
                if seed.error_notification:
                    why = ev.result.error.message if ev.result.error else "failed"
                    log.warning("%s: task %s (%s) failed: %s", run.id, o.task_id, o.agent_name, why)
                if not seed.continue_on_error and ex.stopped_by is None:
                    # not from inside the engine's own bookkeeping: on the next loop turn
                    ex.stopped_by = f"task {o.task_id} failed and continue_on_error is false"
                    loop.call_soon(run.cancel, ex.stopped_by)
            elif isinstance(ev, TaskSlow):
                o = ex.origins[ev.task.n]
                log.warning(
                    "%s: task %s (%s) slow: running for %.0f s", run.id, o.task_id,
                    o.agent_name, ev.elapsed,
                )  # fmt: skip

        return on_event

    def _finished(
        self, ex: views.Execution, fut: asyncio.Future[Finished[None]], seed: SeedSettings
    ) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # the awaiting caller sees the exception
        if seed.log_performance_data:
            p = views.performance(ex)
            eff = p["parallel_efficiency"]
            log.info(
                "%s %s: %d tasks in %d ms (serial estimate %d ms, %.2fx)", ex.id,
                views.overall_status(ex), ex.run.total, eff["total_execution_time_ms"],
                eff["estimated_serial_time_ms"], eff["efficiency_ratio"],
            )  # fmt: skip


def _check_concurrency(n: Any, seed: SeedSettings, source: Path | None) -> None:
    where = f" of {source}" if source is not None else ""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"max_concurrent={n!r}: give a whole number, at least 1")
    if n < seed.min_concurrent:
        raise ConfigError(
            f"max_concurrent={n} is under min_concurrent {seed.min_concurrent}{where}"
        )
    if seed.max_concurrent_limit is not None and n > seed.max_concurrent_limit:
        raise ConfigError(
            f"max_concurrent={n} is over max_concurrent_limit {seed.max_concurrent_limit}"
            f"{where}; give {seed.max_concurrent_limit} or fewer, or raise the limit"
        )


def _merged_value(old: Any, new: Any) -> Any:
    if isinstance(old, dict) and isinstance(new, Mapping):
        out = dict(old)
        _merge(out, new)
        return out
    return new


def _merge(target: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """`changes` into `target`, mappings key by key (so one agent's limit changes alone)."""
    for k, v in changes.items():
        if isinstance(target.get(k), dict) and isinstance(v, Mapping):
            _merge(target[k], v)
        else:
            target[k] = dict(v) if isinstance(v, Mapping) else v
