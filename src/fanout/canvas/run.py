"""A canvas run as a durable run: plan it, start it, resume it (through `fanout.launch`).

The run is kept in the SQLite store with the canvas path, the choices that planned it and
the run options (never a key). Resuming plans the canvas again (the task keys are stable:
target id + agent), keeps every stored result, runs the rest, and writes every target's
notes onto the canvas as it is on disk now. An interrupted run writes what finished.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanout import launch
from fanout.canvas.aggregate import Mode, parse_mode
from fanout.canvas.merge import (
    ORIGINAL_VERDICT_COLOURS,
    SPEC_VERDICT_COLOURS,
    WriteOptions,
    notes_folder,
)
from fanout.canvas.safefile import cannot_write_in
from fanout.canvas.vault import find_vault_root
from fanout.canvas.workflow import CanvasJob, CanvasSink, SinkReport, plan_canvas
from fanout.errors import ConfigError
from fanout.launch import Finished, Launched, Overrides, Reopened, RunOptions, Setup, Watch

if TYPE_CHECKING:
    from fanout.agents import Blueprint
    from fanout.engine.engine import Engine
    from fanout.engine.resume import RetryFailed
from fanout.engine.run import Run

KIND = "canvas"
NOT_SELECTED = "not_selected"  # a --smart follower its verdict did not call for


@dataclass(slots=True, kw_only=True)
class CanvasChoice:
    """What `fanout canvas run` was asked for (kept in the store for resume)."""

    path: str
    agents: list[str] | None = None
    smart: bool | None = None
    #: None: not given (every text node of `group`, else the spec's yellow "3")
    colour: str | None = None
    ids: list[str] | None = None
    group: str | None = None
    samples: int = 1
    mode: Mode = "individual"
    recolour: bool = False
    notes_dir: str | None = None
    node_colour: str = "5"
    restore_deleted: bool = False

    def options(self) -> WriteOptions:
        recolour = None
        if self.recolour:
            recolour = ORIGINAL_VERDICT_COLOURS if self.colour == "6" else SPEC_VERDICT_COLOURS
        return WriteOptions(
            notes_dir=self.notes_dir,
            node_colour=self.node_colour,
            recolour=recolour,
            restore_deleted=self.restore_deleted,
        )

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> CanvasChoice:
        """The choice a stored canvas run was started with."""
        raw = config.get("canvas")
        if not isinstance(raw, Mapping):
            raise ConfigError("this run was not started by `fanout canvas run`")
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in raw.items() if k in known and k != "mode"}
        return cls(**kept, mode=parse_mode(str(raw.get("mode", "individual"))))


@dataclass(slots=True)
class CanvasPlan:
    """A canvas read and planned, every option checked; nothing has run or been written."""

    choice: CanvasChoice
    job: CanvasJob
    setup: Setup


@dataclass(slots=True)
class CanvasOutcome:
    """How a canvas run ended: metrics, what was written, which tasks failed."""

    run_id: str
    job: CanvasJob
    metrics: dict[str, Any]
    report: SinkReport
    failures: list[tuple[str, str]]  # (task key, why)
    interrupted: bool

    def summary(self) -> dict[str, Any]:
        """The run's metrics with what was written and what failed (the --json output)."""
        notes = self.report.notes
        return {
            **self.metrics,
            "notes": [str(n.vault_path) for n in notes],
            "nodes_added": sum(1 for n in notes if n.node == "added"),
            "edges_added": sum(1 for n in notes if n.edge == "added"),
            "write_s": round(self.report.write_s, 4),
            "targets_by": self.job.selection.how,
            "skipped": [
                {"node": s.node_id, "reason": s.reason} for s in self.job.selection.skipped
            ],
            "warnings": [str(w) for w in self.job.selection.warnings],
            "failures": [{"task": k, "error": e} for k, e in self.failures],
            "not_written": [
                {"target": s.target_id, "agent": s.agent, "reason": s.reason}
                for s in self.report.not_written
            ],
            "left_deleted": len(self.report.left_deleted),
        }


@dataclass(slots=True)
class CanvasRun:
    """A started (or resumed) canvas run; `launched.run` is the engine's handle."""

    launched: Launched[SinkReport]
    job: CanvasJob

    async def finish(self, watch: Watch | None = None) -> CanvasOutcome:
        done = await self.launched.finish(watch)
        return outcome(done, self.job)


def outcome(done: Finished[SinkReport], job: CanvasJob) -> CanvasOutcome:
    return CanvasOutcome(
        done.run_id, job, done.metrics, done.output, failures(done.run, job), done.interrupted
    )


def failures(run: Run, job: CanvasJob) -> list[tuple[str, str]]:
    """(task key, why) of each task that ended without an answer it was meant to give."""
    out = []
    for t in job.tasks:
        r = run.result(t)
        if r is not None and not r.ok and not (r.error and r.error.kind == NOT_SELECTED):
            out.append((t.key, r.error.message if r.error else str(r.state)))
    return out


def plan(choice: CanvasChoice, blueprints: Mapping[str, Blueprint]) -> CanvasJob:
    """Read the canvas and plan its tasks; builds no provider (needs no key)."""
    return plan_canvas(
        choice.path,
        blueprints,
        agents=choice.agents,
        smart=choice.smart,
        colour=choice.colour,
        ids=choice.ids,
        group=choice.group,
        samples=choice.samples,
    )


def plan_run(choice: CanvasChoice, options: RunOptions, setup: Setup | None = None) -> CanvasPlan:
    """Everything a run needs, checked: the engine setup (made from `options` unless
    given), the plan, at least one target, the write options. Raises `ConfigError` or
    `InputError`; nothing run, nothing written."""
    setup = launch.engine_setup(options.choice) if setup is None else setup
    job = plan(choice, setup.blueprints)
    if not job.targets:
        raise ConfigError(f"{job.path}: {job.selection.empty_reason()}")
    choice.options()
    check_writable(job.path, choice.notes_dir)
    return CanvasPlan(choice, job, setup)


def check_writable(path: Path, notes_dir: str | None) -> None:
    """`ConfigError` unless the notes folder is in the vault and both it and the canvas's
    folder can be written: found out before the first call, not after all of them."""
    folder = notes_folder(path, find_vault_root(path), notes_dir)
    real_parent = Path(os.path.realpath(path)).parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    for where, what in ((real_parent, "the canvas's folder"), (existing, "the notes folder")):
        why = cannot_write_in(where)
        if why is not None:
            raise ConfigError(
                f"{path}: cannot write in {what} {where} ({why}); make it writable or work "
                "on a copy of the canvas; nothing was run"
            )


async def start_canvas(
    plan: CanvasPlan,
    options: RunOptions,
    *,
    store_path: Path | None = None,
    engine: Engine | None = None,
) -> CanvasRun:
    """Start a planned canvas as a new durable run, writing notes as targets finish."""
    sink = CanvasSink(plan.job, plan.choice.mode, plan.choice.options())
    launched = await launch.start(
        plan.job.tasks,
        sink,
        kind=KIND,
        config={"canvas": dataclasses.asdict(plan.choice)},
        options=options,
        setup=plan.setup,
        store_path=store_path,
        engine=engine,
    )
    return CanvasRun(launched, plan.job)


async def resume_canvas(
    run_id: str,
    *,
    reconfigure: bool = False,
    overrides: Overrides | None = None,
    store_path: Path | None = None,
    retry_failed: RetryFailed = False,
    engine: Engine | None = None,
) -> CanvasRun:
    """Go on with a stored canvas run: plan the canvas again, keep the stored results, run
    the rest, write every target onto the canvas as it is on disk now."""
    jobs: list[CanvasJob] = []

    def reopen(config: Mapping[str, Any], setup: Setup) -> Reopened[SinkReport]:
        choice = CanvasChoice.from_config(config)
        job = plan(choice, setup.blueprints)
        jobs.append(job)
        return Reopened(job.tasks, lambda run: CanvasSink(job, choice.mode, choice.options()))

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
    return CanvasRun(launched, jobs[0])
