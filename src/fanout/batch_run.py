"""A batch as a durable run: `fanout batch` and `fanout resume` call these.

The run is kept in the SQLite store with what is needed to go on with it in another
process: the command-line choices (never a key: keys come from the environment), the input
and output paths, the output order and the lines that were refused. The output file is
written whole, from the store, by rename, when the run ends, so a resumed run rewrites it
from every durable result and never writes a line twice.

Ctrl-C (or SIGTERM) once: nothing new starts, calls in flight may finish for `grace_s`, and
the run ends "interrupted", resumable. Twice: the calls in flight are stopped now (they are
recorded as interrupted and run again on resume). The output file is not written for an
interrupted run (`fanout results RUN -o FILE` exports what is done).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanout.batch import Batch, BatchSink, LineError
from fanout.errors import ConfigError, FanoutError
from fanout.interrupts import interrupts, show_progress

if TYPE_CHECKING:
    from fanout.engine.run import Run
    from fanout.setup import EngineChoice
    from fanout.tasks import Task

DEFAULT_GRACE_S = 10.0
KIND = "batch"


@dataclasses.dataclass(slots=True)
class Outcome:
    run_id: str
    metrics: dict[str, Any]
    lines: int | None  # output lines written; None when the run was interrupted
    output: Path


@dataclasses.dataclass(slots=True, kw_only=True)
class BatchOptions:
    """How to run: store and cache, progress, Ctrl-C grace, and what to say when."""

    store_path: Path | None = None
    cache: bool = True
    cache_ttl_s: float | None = None
    grace_s: float = DEFAULT_GRACE_S
    progress: bool = True
    on_start: Callable[[str], None] = lambda run_id: None
    say: Callable[[str], None] = lambda message: None


def batch_config(
    choice: EngineChoice, batch: Batch, input_path: Path, output: Path, order: str
) -> dict[str, Any]:
    """What a batch run keeps in the store to be resumed elsewhere (no secrets)."""
    c = dataclasses.asdict(choice)
    c["config"] = None if choice.config is None else str(Path(choice.config).resolve())
    return {
        "choice": c,
        "batch": {
            "input": str(input_path.resolve()),
            "output": str(output.resolve()),
            "order": order,
            "lines": batch.lines,
            "refused": [[e.line, e.custom_id, e.reason] for e in batch.errors],
        },
    }


def stored_choice(config: Mapping[str, Any], **overrides: Any) -> EngineChoice:
    """The `EngineChoice` a stored batch run was started with, with `overrides` applied."""
    from fanout.setup import EngineChoice

    raw = dict(config.get("choice") or {})
    known = {f.name for f in dataclasses.fields(EngineChoice)}
    raw = {k: v for k, v in raw.items() if k in known}
    if raw.get("config") is not None:
        raw["config"] = Path(raw["config"])
    raw.update({k: v for k, v in overrides.items() if v is not None})
    return EngineChoice(**raw)


def stored_batch(config: Mapping[str, Any], tasks: list[Task]) -> tuple[Batch, Path, str]:
    """The batch (tasks, refused lines), output path and order of a stored batch run."""
    b = config.get("batch")
    if not isinstance(b, dict):
        raise ConfigError("this run was not started by `fanout batch`: resume it from Python")
    errors = [LineError(int(x[0]), x[1], str(x[2])) for x in b.get("refused") or []]
    return Batch(tasks, errors, int(b.get("lines") or len(tasks))), Path(b["output"]), b["order"]


def _store(opts: BatchOptions) -> Any:
    from fanout.store.sqlite import SqliteStore

    return SqliteStore(opts.store_path)


async def start_batch(
    batch: Batch,
    sink: BatchSink,
    engine_kwargs: dict[str, Any],
    submit_kwargs: dict[str, Any],
    config: dict[str, Any],
    opts: BatchOptions,
) -> Outcome:
    """Run a parsed batch as a new durable run; write its output file when it ends."""
    from fanout.engine.engine import Engine

    engine = Engine(**engine_kwargs, store=_store(opts), cache=opts.cache, **_ttl(opts.cache_ttl_s))
    async with engine:
        run = engine.submit(batch.tasks, kind=KIND, config=config, **submit_kwargs)
        return await _follow(engine, run, sink, opts)


async def resume_batch(
    run_id: str,
    *,
    reconfigure: bool,
    opts: BatchOptions,
    concurrency: int | None = None,
) -> Outcome:
    """Go on with a stored batch run; rewrite its output file from the store when it ends."""
    from fanout.engine.engine import Engine
    from fanout.setup import engine_setup

    store = _store(opts)
    try:
        snap = await store.snapshot(run_id)
        if snap is None:
            raise FanoutError(f"no run {run_id!r} in the run store ({store.path})")
        if snap.kind != KIND or not isinstance(snap.config.get("batch"), dict):
            raise ConfigError(
                f"run {run_id} is a {snap.kind!r} run, not a batch: resume it from Python "
                "with engine.resume(run_id, tasks=[...])"
            )
    except BaseException:
        await store.close()
        raise
    setup = engine_setup(stored_choice(snap.config, concurrency=concurrency))
    engine = Engine(**setup.engine_kwargs, store=store, cache=opts.cache, **_ttl(opts.cache_ttl_s))
    async with engine:
        run = await engine.resume(
            run_id, reconfigure=reconfigure, blueprints=setup.blueprints, config=snap.config
        )
        batch, output, order = stored_batch(snap.config, run.tasks)
        sink = BatchSink(batch, output, order)  # type: ignore[arg-type]
        try:
            if order == "completion":
                for r in await run.results():  # what earlier segments finished
                    sink.writer.write(sink.line(r))
        except BaseException:
            sink.writer.abort()
            raise
        return await _follow(engine, run, sink, opts, setup.note)


def _ttl(ttl_s: float | None) -> dict[str, Any]:
    return {} if ttl_s is None else {"cache_ttl_s": ttl_s}


async def _follow(
    engine: Any, run: Run, sink: BatchSink, opts: BatchOptions, note: str | None = None
) -> Outcome:
    """Wait for `run`, with Ctrl-C handled as the module docstring says; write the file."""
    opts.on_start(run.id)
    if note:
        opts.say(note)
    sink.attach(run)
    with interrupts(run, opts.grace_s, opts.say):
        try:
            await show_progress(run, opts.progress)
            metrics = await run.wait()
            if run.status == "interrupted":
                sink.writer.abort()
                return Outcome(run.id, metrics, None, sink.writer.target)
            lines = await sink.finish(run)
        except BaseException:
            sink.writer.abort()
            raise
    return Outcome(run.id, metrics, lines, sink.writer.target)


def export_results(db: Any, run_id: str, out: Path) -> tuple[int, int, int]:
    """Write a stored run's results to `out` (atomically), complete or partial: a batch run
    as its output file would be (input order, refused lines included, unfinished lines
    left out), any other run as one `Result.as_dict()` per line. Returns (lines written,
    tasks with a result, tasks)."""
    from fanout.batch import AtomicJsonlWriter, output_line
    from fanout.store import queries

    info = queries.run_info(db, run_id)
    if info is None:
        raise FanoutError(f"no run {run_id!r} in the run store")
    tasks = queries.stub_tasks(db, run_id)
    results = queries.load_results(db, run_id, tasks)
    writer = AtomicJsonlWriter(out)
    try:
        config = info["config"]
        if info["kind"] == KIND and isinstance(config.get("batch"), dict):
            by_n = {r.task.n: r for r in results}
            batch, _, _ = stored_batch(config, [t for t in tasks if t.n in by_n])
            for item in batch.slots():
                writer.write(output_line(item if isinstance(item, LineError) else by_n[item.n]))
        else:
            for r in results:
                writer.write(r.as_dict())
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.lines, len(results), len(tasks)
