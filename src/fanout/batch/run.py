"""A batch as a durable run: plan it, start it, resume it, export its results.

The run is kept in the SQLite store with what is needed to go on with it in another
process: the run options (engine choice, cache, deadline, grace; never a key), the input
and output paths, the output order and the lines that were refused. The input is streamed
(`stream.py`): checked in a first pass, then fed to the run a window at a time, so memory
does not grow with the file. The output file is written whole, from the store, by rename,
when the run ends, so a resumed run rewrites it from every durable result and never writes
a line twice. An interrupted run writes no file (`fanout results RUN -o FILE` exports what
is done).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanout import launch
from fanout.batch.output import (
    AtomicJsonlWriter,
    BatchSink,
    Order,
    check_output_path,
    write_in_input_order,
)
from fanout.batch.parse import DEFAULT_MAX_LINE_BYTES, Batch, LineError
from fanout.batch.stream import (
    Feed,
    Scan,
    TaskReader,
    check_unchanged,
    iter_tasks,
    resume_mark,
    scan_batch,
    window_for,
)
from fanout.engine.engine import Engine
from fanout.engine.resume import RetryFailed
from fanout.engine.run import Run
from fanout.errors import ConfigError, FanoutError, InputError
from fanout.launch import Finished, Launched, Overrides, Reopened, RunOptions, Setup, Watch
from fanout.tasks import Task

KIND = "batch"
#: the refused lines a message names one by one (the rest are counted)
BAD_LINES_NAMED = 20


class EveryLineBad(InputError):
    """A batch none of whose lines can be run: refused whole, before a run is made (a
    run of refusals only would write an output file of error lines and exit 1)."""

    def __init__(self, input_path: Path, errors: list[LineError]) -> None:
        self.errors = errors
        self.summary = (
            f"{input_path}: every line is bad ({len(errors)} of {len(errors)}): nothing was "
            "run and no output written; fix the lines named and run it again"
        )
        shown = [str(e) for e in errors[:BAD_LINES_NAMED]]
        if len(errors) > BAD_LINES_NAMED:
            shown.append(f"... and {len(errors) - BAD_LINES_NAMED} more bad lines")
        super().__init__("\n".join([self.summary, *shown]))


@dataclass(slots=True)
class BatchPlan:
    """A batch read and checked; nothing has run and nothing is written."""

    batch: Batch  # its refused lines and line count; the tasks are read as the run goes
    input: Path
    output: Path
    order: Order
    setup: Setup
    scan: Scan | None = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES


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
    feed: Feed | None = None  # what keeps a streamed batch's window full

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
    for provider in setup.providers.values():  # the SDK loads while the input is read
        preload = getattr(provider, "preload", None)
        if preload is not None:
            preload()
    out = check_output_path(output, input_path)
    scan = scan_batch(input_path, setup.blueprints, max_line_bytes=max_line_bytes)
    if scan.lines == 0:
        raise ConfigError(f"{input_path}: has no request lines")
    if scan.tasks == 0:
        raise EveryLineBad(input_path, scan.errors)
    batch = Batch([], scan.errors, scan.lines)
    return BatchPlan(batch, input_path, out, order, setup, scan, max_line_bytes)


def batch_config(plan: BatchPlan) -> dict[str, Any]:
    """The batch's part of what the run keeps in the store (the options are added)."""
    return {
        "batch": {
            "input": str(plan.input.resolve()),
            "output": str(plan.output.resolve()),
            "order": plan.order,
            "lines": plan.batch.lines,
            "refused": [[e.line, e.custom_id, e.reason] for e in plan.batch.errors],
            "max_line_bytes": plan.max_line_bytes,
            "referenced": sorted(plan.scan.referenced) if plan.scan else [],
            "forward": bool(plan.scan and plan.scan.forward),
            "size": plan.scan.size if plan.scan else None,
            "mtime_ns": plan.scan.mtime_ns if plan.scan else None,
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
    window: int | None = None,
    engine: Engine | None = None,
) -> BatchRun:
    """Start a planned batch as a new durable run; returns as soon as it runs (on
    `engine` when given: the service's, shared by its runs). At most `window` of its
    tasks are in memory at once (default: from the concurrency)."""
    scan = plan.scan
    if scan is None:  # planned by hand from a parsed `Batch`: every task is in memory
        sink = BatchSink(plan.batch, plan.output, plan.order)
        first = plan.batch.tasks
    else:
        refused = {e.line for e in plan.batch.errors}
        tasks = iter_tasks(
            plan.input, plan.setup.blueprints, refused, max_line_bytes=plan.max_line_bytes
        )
        size = window or _window(plan.setup)
        feed = Feed(tasks, size, scan.referenced, by_line=scan.forward, total=scan.tasks)
        sink = BatchSink(plan.batch, plan.output, plan.order, feed=feed, store_path=store_path)
        first = feed.first()
    launched = await launch.start(
        first,
        sink,
        kind=KIND,
        config=batch_config(plan),
        options=options,
        setup=plan.setup,
        store_path=store_path,
        engine=engine,
    )
    return BatchRun(launched, plan.output, [e.line for e in plan.batch.errors], sink.feed)


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
    feeds: list[Feed] = []

    def reopen(config: Mapping[str, Any], setup: Setup) -> Reopened[int | None]:
        # a batch run's config, or ConfigError before anything runs
        stored = stored_batch(config, [])[0]
        bad.extend(e.line for e in stored.errors)
        b = config["batch"]
        streamed = "max_line_bytes" in b  # runs started before streaming hold every task
        if streamed:
            check_unchanged(Path(b["input"]), b.get("size"), b.get("mtime_ns"))

        def sink(run: Run) -> BatchSink:
            if not streamed:
                batch, out, order = stored_batch(config, [t for t in run.tasks if t])
                output.append(out)
                return BatchSink(batch, out, order)
            batch, out, order = stored_batch(config, [])
            output.append(out)
            feed = _resumed_feed(run, b, setup, batch, store_path)
            feeds.append(feed)
            return BatchSink(batch, out, order, feed=feed, store_path=store_path)

        # a streamed run keeps its finished tasks in the store, but those lines depend on
        keep = frozenset(b.get("referenced") or ()) if streamed else None
        expect = int(b.get("lines") or 0) - len(stored.errors) if streamed else 0
        return Reopened(None, sink, keep, expect)

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
    return BatchRun(launched, output[0], bad, feeds[0] if feeds else None)


def _window(setup: Setup) -> int:
    concurrency = setup.engine.get("concurrency")
    return window_for(concurrency if isinstance(concurrency, int) else 16)


def _resumed_feed(
    run: Run, b: Mapping[str, Any], setup: Setup, batch: Batch, store_path: Path | None
) -> Feed:
    """The feed of a resumed streamed run: the lines its earlier segments never added."""
    from fanout.store.sqlite import opened

    refused = {e.line for e in batch.errors}
    stored = len(run.tasks)
    src = Path(b["input"])
    max_line_bytes = int(b["max_line_bytes"])
    start, first = 0, 1
    skip: Callable[[int], bool]
    if b.get("forward"):  # tasks were added out of line order: skip exactly those stored
        from fanout.store import queries

        with opened(store_path) as db:
            have = queries.task_lines(db, run.id)
        skip = have.__contains__
    else:  # tasks were added in line order: the first `stored` good lines are in the run
        # from the input mark (`resume_mark`): the lines above it are in the run already
        with opened(store_path) as db:
            mark = resume_mark(db, run.id, src, setup.blueprints, max_line_bytes)
        start, first, seen = mark if mark is not None else (0, 1, 0)
        counted = [seen]

        def skip(line: int) -> bool:
            counted[0] += 1
            return counted[0] <= stored

    tasks = TaskReader(
        src,
        setup.blueprints,
        refused,
        max_line_bytes=max_line_bytes,
        skip=skip,
        start=start,
        first=first,
    )
    referenced = frozenset(b.get("referenced") or ())
    total = int(b.get("lines") or 0) - len(batch.errors)
    feed = Feed(tasks, _window(setup), referenced, by_line=bool(b.get("forward")), total=total)
    feed.read_from = first
    return feed


def export_results(db: sqlite3.Connection, run_id: str, out: Path) -> tuple[int, int, int]:
    """Write a stored run's results to `out` (atomically), complete or partial: a batch run
    as its output file would be (input order, refused lines included, unfinished lines
    left out), any other run as one `Result.as_dict()` per line. Returns (lines written,
    tasks with a result, tasks)."""
    from fanout.store import queries

    info = queries.run_info(db, run_id)
    if info is None:
        raise FanoutError(f"no run {run_id!r} in the run store")
    config = info["config"]
    (tasks,) = db.execute(
        "SELECT count(*) FROM tasks JOIN runs USING (rid) WHERE id = ?", (run_id,)
    ).fetchone()
    answered = 0
    writer = AtomicJsonlWriter(out)
    try:
        if info["kind"] == KIND and isinstance(config.get("batch"), dict):
            batch, _, _ = stored_batch(config, [])
            forward = bool(config["batch"].get("forward"))
            write_in_input_order(writer, db, run_id, batch.errors, forward)
            answered = writer.lines - len(batch.errors)
        else:
            for r in queries.iter_results(db, run_id):
                writer.write(r.as_dict())
                answered += 1
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return writer.lines, answered, int(tasks)
