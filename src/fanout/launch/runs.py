"""Start, follow, interrupt and resume a durable run: what every front end (the CLI, the
service) and both applications (batch, canvas) share.

`start` and `resume` return at once with a `Launched` handle holding the `Run`; its
`finish()` waits for the run, lets the sink finish its output, closes the engine and gives
a `Finished`. Nothing here touches the terminal or signals: a front end passes a `watch`
coroutine (e.g. a progress display) to `finish` and calls `interrupt()` on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from fanout.engine.engine import Engine
from fanout.engine.resume import RetryFailed
from fanout.engine.run import Run
from fanout.engine.settings import DEFAULT_CACHE_TTL_S
from fanout.errors import ConfigError, FanoutError
from fanout.launch.options import Overrides, RunOptions
from fanout.launch.setup import Setup, engine_setup
from fanout.launch.sink import Sink
from fanout.store.sqlite import SqliteStore, default_path, opened
from fanout.tasks import Task

T = TypeVar("T")
V = TypeVar("V")
Watch = Callable[[Run], Awaitable[None]]


@dataclass(slots=True)
class Finished(Generic[T]):
    """A run that has ended: its handle, its metrics, what its sink's `finish` returned."""

    run: Run
    metrics: dict[str, Any]
    output: T

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def interrupted(self) -> bool:
        return self.run.status == "interrupted"


@dataclass(slots=True)
class Reopened(Generic[T]):
    """How an application goes on with one of its stored runs."""

    tasks: list[Task] | None  # its tasks again (same keys); None: rebuilt from the store
    sink: Callable[[Run], Sink[T]]  # its sink, made once the run is back
    #: a lean resume: finished tasks stay in the store but those with these keys (see
    #: `Engine.resume`); None: every task is loaded
    keep: Collection[str] | None = None
    #: the tasks the run will have once the sink has added the rest (0: those stored)
    expect: int = 0


#: an application's part of `resume`: from the run's stored config and the engine setup
#: to its tasks and sink; raises `ConfigError` when the stored config is not its own
Reopen = Callable[[Mapping[str, Any], Setup], Reopened[T]]


class Launched(Generic[T]):
    """A started or resumed run. `run` is the engine's handle (events, stats, results);
    `finish()` sees it to the end (call it once; later calls wait for the same end)."""

    def __init__(
        self,
        engine: Engine,
        run: Run,
        sink: Sink[T],
        options: RunOptions,
        note: str | None,
        owns_engine: bool = True,
    ) -> None:
        self.run = run
        self.options = options
        self.note = note  # one line for the user, e.g. that the simulator answers
        self._engine = engine
        # an engine shared by many runs (the service's) outlives each of them
        self._owns_engine = owns_engine
        self._sink = sink
        self._finishing: asyncio.Task[Finished[T]] | None = None

    @property
    def run_id(self) -> str:
        return self.run.id

    def interrupt(self, now: bool = False) -> None:
        """Start nothing new; calls in flight may finish for `options.grace_s` (none with
        `now`); the run ends "interrupted" and can be resumed."""
        self.run.interrupt(0 if now else self.options.grace_s)

    async def finish(self, watch: Watch | None = None) -> Finished[T]:
        """Wait for the run (running `watch(run)` beside it), finish the sink's output and
        close the engine. On any error the sink is aborted and the engine closed."""
        if self._finishing is None:
            self._finishing = asyncio.ensure_future(self._finish(watch))
        return await asyncio.shield(self._finishing)

    async def _finish(self, watch: Watch | None) -> Finished[T]:
        run = self.run
        watcher = None if watch is None else asyncio.ensure_future(watch(run))
        try:
            metrics = await run.wait()
            if watcher is not None:
                await watcher
            output = await self._sink.finish(run)
        except BaseException:
            self._sink.abort()
            raise
        finally:
            if watcher is not None and not watcher.done():
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if self._owns_engine:
                await self._engine.aclose()
        return Finished(run, metrics, output)


def open_store(path: Path | None = None) -> SqliteStore:
    """The run store: `path`, or the default one in the data dir."""
    return SqliteStore(path)


def find_run(ref: str, store_path: Path | None = None) -> str:
    """The id of the stored run `ref` names (an id or a unique prefix of one)."""
    from fanout.store import queries

    with opened(store_path) as db:
        run_id = queries.find_run(db, ref)
        matches = [] if run_id is not None else _runs_starting(db, ref)
    if run_id is not None:
        return run_id
    if matches:
        shown = ", ".join(
            f"{rid} ({kind}, {status}, {time.strftime('%Y-%m-%d %H:%M', time.localtime(at))})"
            for rid, kind, status, at in matches[:SHOW_MATCHES]
        )
        more = f" and {len(matches) - SHOW_MATCHES} more" if len(matches) > SHOW_MATCHES else ""
        raise FanoutError(
            f"ambiguous: {len(matches)} runs match {ref!r}: {shown}{more}; give more of the id"
        )
    where = store_path or default_path()
    raise FanoutError(f"no run {ref!r} in the run store ({where}); see fanout runs")


SHOW_MATCHES = 5


def _runs_starting(db: sqlite3.Connection, prefix: str) -> list[tuple[str, str, str, float]]:
    """(id, kind, status, started) of every run whose id starts with `prefix`, newest first."""
    pattern = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = db.execute(
        "SELECT id, kind, status, created_at FROM runs WHERE id LIKE ? ESCAPE '\\' "
        "ORDER BY created_at DESC",
        (pattern,),
    ).fetchall()
    return [(str(r[0]), str(r[1]), str(r[2]), float(r[3])) for r in rows]


def run_kind(run_id: str, store_path: Path | None = None) -> str | None:
    """What started a stored run ("batch", "canvas", ...); None when there is no such run."""
    from fanout.store import queries

    with opened(store_path) as db:
        info = queries.run_info(db, run_id, counts=False)
    return None if info is None else str(info["kind"])


def _engine(
    setup: Setup, options: RunOptions, store: SqliteStore, tasks: int | None = None
) -> Engine:
    """The engine of a run. With `tasks` (a run that cannot grow), no more workers than
    tasks: the engine makes one worker per slot up front, and `--concurrency 100000` for a
    file of 25 lines would spend seconds making workers that never get a task."""
    ttl = DEFAULT_CACHE_TTL_S if options.cache_ttl_s is None else options.cache_ttl_s
    kw = setup.engine.copy()
    if tasks is not None and "concurrency" in kw:
        kw["concurrency"] = max(1, min(kw["concurrency"], tasks))
    return Engine(
        **kw,
        providers=setup.providers,
        seed=setup.seed,
        store=store,
        cache=options.cache,
        cache_ttl_s=ttl,
        backend=setup.backend,
    )


def shared_engine(setup: Setup, options: RunOptions, store_path: Path | None = None) -> Engine:
    """One engine for many runs (the service's): they share its workers and the limits of
    its providers. Pass it to `start`/`resume` as `engine=`; whoever made it closes it."""
    return _engine(setup, options, open_store(store_path))


def _pick(configured: V | None, given: V | None) -> V | None:
    """A flag over the config file's value."""
    return configured if given is None else given


def _deadline(options: RunOptions, setup: Setup) -> float | None:
    return setup.deadline_s if options.deadline_s is None else options.deadline_s


async def start(
    tasks: Sequence[Task],
    sink: Sink[T],
    *,
    kind: str,
    config: Mapping[str, Any],
    options: RunOptions,
    setup: Setup | None = None,
    store_path: Path | None = None,
    run_id: str | None = None,
    engine: Engine | None = None,
) -> Launched[T]:
    """Start `tasks` as a new durable run writing to `sink`; returns as soon as it runs
    and its opening is in the store. `config` is the application's part of the stored
    config (the options are added). On an error nothing runs and the sink is aborted. With
    `engine` (a started one, see `shared_engine`) the run joins it and leaves it open when
    it ends."""
    owns = engine is None
    try:
        stored = {**config, **options.to_config()}
        _check_storable(stored)
        setup = engine_setup(options.choice) if setup is None else setup
        if engine is None:
            store = open_store(store_path)
            try:
                fixed = not any(t.then is not None for t in tasks)  # `then` adds tasks
                engine = _engine(setup, options, store, len(tasks) if fixed else None)
                await engine.start()  # a backend that cannot start fails here, nothing run
            except BaseException:
                await store.close()
                raise
    except BaseException:
        sink.abort()
        raise
    try:
        run = engine.submit(
            tasks,
            kind=kind,
            run_id=run_id,
            deadline_s=_deadline(options, setup),
            config=stored,
            max_cost_usd=_pick(setup.max_cost_usd, options.max_cost_usd),
            max_tokens=_pick(setup.max_tokens, options.max_tokens),
        )
        sink.attach(run)
        # the id a front end shows must be one `fanout resume` knows: a user may Ctrl-C
        # (or the process die) the instant it appears
        await run.stored()
    except BaseException:
        sink.abort()
        if owns:
            await engine.aclose()
        raise
    return Launched(engine, run, sink, options, setup.note, owns_engine=owns)


def _check_storable(config: Mapping[str, Any]) -> None:
    """Refuse, before anything runs, a run whose settings the store cannot keep: text that
    is not UTF-8 (a flag or a file name with a byte like 0xff arrives as a lone surrogate),
    named by where it is, never shown whole."""
    stack: list[tuple[str, Any]] = [("", config)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                what = _STORED_NAMES.get(where, where)
                raise ConfigError(
                    f"{what} is not UTF-8 text (it holds a byte such as 0xff); fanout keeps it "
                    "with the run: give it as UTF-8 (rename the file, retype the value)"
                ) from None
        elif isinstance(v, Mapping):
            stack.extend((f"{where}.{k}" if where else str(k), x) for k, x in v.items())
        elif isinstance(v, list | tuple):
            stack.extend((where, x) for x in v)


#: where in a run's stored settings -> what the user gave it as
_STORED_NAMES = {
    "batch.input": "the input file's path",
    "batch.output": "the output file's path (-o)",
    "choice.config": "the --config path",
    **{f"choice.{f}": "--" + f.replace("_", "-") for f in ("provider", "model", "base_url")},
    **{f"choice.{f}": "--" + f.replace("_", "-") for f in ("command", "sim_latency", "sim_faults")},
}


async def resume(
    run_id: str,
    reopen: Reopen[T],
    *,
    kind: str,
    reconfigure: bool = False,
    overrides: Overrides | None = None,
    store_path: Path | None = None,
    retry_failed: RetryFailed = False,
    engine: Engine | None = None,
) -> Launched[T]:
    """Go on with stored run `run_id` of `kind` with the options it was started with and
    `overrides`; finished tasks are not sent again (but failed ones with `retry_failed`:
    all, or those of the error classes or kinds named). Raises `ConfigError` when settings
    results depend on changed (unless `reconfigure`) and `RunBusy` while another process
    runs it. With `engine` (a started one) the run joins it, as in `start`."""
    owns = engine is None
    own_store = open_store(store_path) if engine is None else None
    store = own_store if engine is None else engine.store
    assert store is not None
    try:
        info = await store.run_info(run_id, counts=False)  # its kind and config
        if info is None:
            where = getattr(store, "path", None) or store_path or default_path()
            raise FanoutError(f"no run {run_id!r} in the run store ({where})")
        stored_kind, stored_config = str(info["kind"]), dict(info["config"])
        if stored_kind != kind:
            raise ConfigError(
                f"run {run_id} is a {stored_kind!r} run, not a {kind} run: resume it from "
                "Python with engine.resume(run_id, tasks=[...])"
            )
        options = RunOptions.from_config(stored_config).updated(overrides or Overrides())
        _check_storable(options.to_config())
        setup = engine_setup(options.choice)
        reopened = reopen(stored_config, setup)
        if own_store is not None:
            engine = _engine(setup, options, own_store)
            await engine.start()  # a backend that cannot start fails here, nothing run
    except BaseException:
        if owns:
            await store.close()
        raise
    assert engine is not None
    sink: Sink[T] | None = None
    try:
        run = await engine.resume(
            run_id,
            reopened.tasks,
            reconfigure=reconfigure,
            blueprints=setup.blueprints,
            config={**stored_config, **options.to_config()},
            deadline_s=_deadline(options, setup),
            retry_failed=retry_failed,
            max_cost_usd=_pick(setup.max_cost_usd, options.max_cost_usd),
            max_tokens=_pick(setup.max_tokens, options.max_tokens),
            lean=reopened.keep,
            expect=reopened.expect,
        )
        sink = reopened.sink(run)
        sink.attach(run)
    except BaseException:
        if sink is not None:
            sink.abort()
        if owns:
            await engine.aclose()
        raise
    return Launched(engine, run, sink, options, setup.note, owns_engine=owns)
