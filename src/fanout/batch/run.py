"""A batch as a durable run: plan it, start it, resume it, export its results.

The run is kept in the SQLite store with what is needed to go on with it in another
process: the run options (engine choice, cache, deadline, grace; never a key), the input
and output paths, the output order and the lines that were refused. The output file is
written whole, from the store, by rename, when the run ends, so a resumed run rewrites it
from every durable result and never writes a line twice. An interrupted run writes no file
(`fanout results RUN -o FILE` exports what is done).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout import launch
from fanout.batch.output import AtomicJsonlWriter, BatchSink, Order, check_output_path, output_line
from fanout.batch.parse import DEFAULT_MAX_LINE_BYTES, Batch, LineError, read_batch
from fanout.engine.engine import Engine
from fanout.engine.resume import RetryFailed
from fanout.engine.run import Run
from fanout.errors import ConfigError, FanoutError
from fanout.launch import Finished, Launched, Overrides, Reopened, RunOptions, Setup, Watch
from fanout.tasks import Task

KIND = "batch"


@dataclass(slots=True)
class BatchPlan:
    """A batch read and checked; nothing has run and nothing is written."""

    batch: Batch
    input: Path
    output: Path
    order: Order
    setup: Setup


@dataclass(slots=True)
class BatchOutcome:
    """How a batch run ended: its summary (the run's metrics, bad lines, output lines)."""

    run_id: str
    summary: dict[str, Any]
    lines: int | None  # output lines written; None when the run was interrupted
    output: Path
    bad_lines: tuple[int, ...] = ()  # the input line numbers refused (not run)

    @property
    def interrupted(self) -> bool:
        return self.lines is None

    @property
    def ok(self) -> bool:
        """Every line answered: no failed task, no refused line."""
        s = self.summary
        return bool(s["done"] == s["total"] and not s["bad_lines"])


@dataclass(slots=True)
class BatchRun:
    """A started (or resumed) batch run; `launched.run` is the engine's handle."""

    launched: Launched[int | None]
    output: Path
    bad_lines: list[int]  # the input line numbers refused (not run), a resumed run's too

    async def finish(self, watch: Watch | None = None) -> BatchOutcome:
        done = await self.launched.finish(watch)
        return outcome(done, self.output, self.bad_lines)


def outcome(
    done: Finished[int | None], output: Path, bad_lines: list[int] | None = None
) -> BatchOutcome:
    bad = tuple(sorted(bad_lines or ()))
    summary = dict(done.metrics)
    summary["bad_lines"] = len(bad)
    if done.output is not None:
        summary["output_lines"] = done.output
    return BatchOutcome(done.run_id, summary, done.output, output, bad)


def plan_batch(
    input_path: Path,
    output: Path,
    order: Order,
    options: RunOptions,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    setup: Setup | None = None,
) -> BatchPlan:
    """Read `input_path` and check everything a run needs. Raises `ConfigError` or
    `InputError` (nothing run, nothing written); bad lines are kept in `batch.errors`.
    `setup`: the engine setup already made (the service's), else made from `options`."""
    setup = launch.engine_setup(options.choice) if setup is None else setup
    out = check_output_path(output, input_path)
    batch = read_batch(input_path, setup.blueprints, max_line_bytes=max_line_bytes)
    if batch.lines == 0:
        raise ConfigError(f"{input_path}: has no request lines")
    return BatchPlan(batch, input_path, out, order, setup)


def batch_config(plan: BatchPlan) -> dict[str, Any]:
    """The batch's part of what the run keeps in the store (the options are added)."""
    return {
        "batch": {
            "input": str(plan.input.resolve()),
            "output": str(plan.output.resolve()),
            "order": plan.order,
            "lines": plan.batch.lines,
            "refused": [[e.line, e.custom_id, e.reason] for e in plan.batch.errors],
        },
    }


def stored_batch(config: Mapping[str, Any], tasks: list[Task]) -> tuple[Batch, Path, Order]:
    """The batch (tasks, refused lines), output path and order of a stored batch run."""
    from fanout.batch.output import parse_order

    b = config.get("batch")
    if not isinstance(b, dict):
        raise ConfigError("this run was not started by `fanout batch`: resume it from Python")
    errors = [LineError(int(x[0]), x[1], str(x[2])) for x in b.get("refused") or []]
    batch = Batch(tasks, errors, int(b.get("lines") or len(tasks)))
    return batch, Path(b["output"]), parse_order(str(b["order"]))


async def start_batch(
    plan: BatchPlan,
    options: RunOptions,
    *,
    store_path: Path | None = None,
    engine: Engine | None = None,
) -> BatchRun:
    """Start a planned batch as a new durable run; returns as soon as it runs (on
    `engine` when given: the service's, shared by its runs)."""
    sink = BatchSink(plan.batch, plan.output, plan.order)
    launched = await launch.start(
        plan.batch.tasks,
        sink,
        kind=KIND,
        config=batch_config(plan),
        options=options,
        setup=plan.setup,
        store_path=store_path,
        engine=engine,
    )
    return BatchRun(launched, plan.output, [e.line for e in plan.batch.errors])


async def resume_batch(
    run_id: str,
    *,
    reconfigure: bool = False,
    overrides: Overrides | None = None,
    store_path: Path | None = None,
    retry_failed: RetryFailed = False,
    engine: Engine | None = None,
) -> BatchRun:
    """Go on with a stored batch run; its output file is rewritten from the store when it
    ends."""
    output: list[Path] = []
    bad: list[int] = []

    def reopen(config: Mapping[str, Any], setup: Setup) -> Reopened[int | None]:
        # a batch run's config, or ConfigError before anything runs
        bad.extend(e.line for e in stored_batch(config, [])[0].errors)

        def sink(run: Run) -> BatchSink:
            batch, out, order = stored_batch(config, run.tasks)
            output.append(out)
            return BatchSink(batch, out, order)

        return Reopened(None, sink)

    launched = await launch.resume(
        run_id,
        reopen,
        kind=KIND,
        reconfigure=reconfigure,
        overrides=overrides,
        store_path=store_path,
        retry_failed=retry_failed,
        engine=engine,
    )
    return BatchRun(launched, output[0], bad)


def export_results(db: sqlite3.Connection, run_id: str, out: Path) -> tuple[int, int, int]:
    """Write a stored run's results to `out` (atomically), complete or partial: a batch run
    as its output file would be (input order, refused lines included, unfinished lines
    left out), any other run as one `Result.as_dict()` per line. Returns (lines written,
    tasks with a result, tasks)."""
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
