"""A canvas run as a durable run: `fanout canvas run` and `fanout resume` call these.

The run is kept in the SQLite store with the canvas path and the choices that planned it
(never a key). Resuming plans the canvas again (the task keys are stable: target id +
agent), keeps every stored result, runs the rest, and writes every target's notes onto the
canvas as it is on disk now. Ctrl-C once: nothing new starts and the run ends
"interrupted", resumable; what finished is written to the canvas. Twice: calls in flight
stop now.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanout.canvas.merge import ORIGINAL_VERDICT_COLOURS, SPEC_VERDICT_COLOURS, WriteOptions
from fanout.canvas.workflow import CanvasJob, CanvasSink, SinkReport, plan_canvas
from fanout.errors import ConfigError, FanoutError
from fanout.interrupts import interrupts, show_progress

if TYPE_CHECKING:
    from fanout.engine.run import Run
    from fanout.setup import EngineChoice, Setup

KIND = "canvas"
DEFAULT_GRACE_S = 10.0


@dataclass(slots=True, kw_only=True)
class CanvasChoice:
    """What `fanout canvas run` was asked for (kept in the store for resume)."""

    path: str
    agents: list[str] | None = None
    smart: bool | None = None
    colour: str = "3"
    ids: list[str] | None = None
    group: str | None = None
    samples: int = 1
    mode: str = "individual"
    recolour: bool = False
    notes_dir: str | None = None
    node_colour: str = "5"

    def options(self) -> WriteOptions:
        recolour = None
        if self.recolour:
            recolour = ORIGINAL_VERDICT_COLOURS if self.colour == "6" else SPEC_VERDICT_COLOURS
        return WriteOptions(
            notes_dir=self.notes_dir, node_colour=self.node_colour, recolour=recolour
        )


@dataclass(slots=True)
class CanvasOutcome:
    run_id: str
    job: CanvasJob
    metrics: dict[str, Any]
    report: SinkReport
    interrupted: bool


@dataclass(slots=True, kw_only=True)
class RunOptions:
    store_path: Path | None = None
    cache: bool = True
    grace_s: float = DEFAULT_GRACE_S
    progress: bool = True
    on_start: Callable[[str], None] = lambda run_id: None
    say: Callable[[str], None] = lambda message: None


def plan(choice: CanvasChoice, setup: Setup) -> CanvasJob:
    return plan_canvas(
        choice.path,
        setup.blueprints,
        agents=choice.agents,
        smart=choice.smart,
        colour=choice.colour,
        ids=choice.ids,
        group=choice.group,
        samples=choice.samples,
    )


def _store(opts: RunOptions) -> Any:
    from fanout.store.sqlite import SqliteStore

    return SqliteStore(opts.store_path)


async def start_canvas(
    choice: CanvasChoice,
    engine_choice: EngineChoice,
    setup: Setup,
    job: CanvasJob,
    opts: RunOptions,
) -> CanvasOutcome:
    """Run a planned canvas job as a new durable run, writing notes as targets finish."""
    from fanout.engine.engine import Engine

    config = {
        "canvas": dataclasses.asdict(choice),
        "choice": _choice_dict(engine_choice),
    }
    sink = CanvasSink(job, choice.mode, choice.options())  # type: ignore[arg-type]
    engine = Engine(**setup.engine_kwargs, store=_store(opts), cache=opts.cache)
    async with engine:
        run = engine.submit(job.tasks, kind=KIND, config=config, **setup.submit_kwargs)
        return await _follow(run, job, sink, opts)


async def resume_canvas(run_id: str, *, reconfigure: bool, opts: RunOptions) -> CanvasOutcome:
    """Go on with a stored canvas run: plan the canvas again, keep the stored results, run
    the rest, write every target onto the canvas as it is on disk now."""
    from fanout.engine.engine import Engine
    from fanout.setup import engine_setup

    store = _store(opts)
    try:
        snap = await store.snapshot(run_id)
        if snap is None:
            raise FanoutError(f"no run {run_id!r} in the run store ({store.path})")
        raw = snap.config.get("canvas")
        if snap.kind != KIND or not isinstance(raw, dict):
            raise ConfigError(f"run {run_id} is a {snap.kind!r} run, not a canvas run")
        choice = CanvasChoice(**raw)
        setup = engine_setup(_stored_engine_choice(snap.config))
        job = plan(choice, setup)
    except BaseException:
        await store.close()
        raise
    sink = CanvasSink(job, choice.mode, choice.options())  # type: ignore[arg-type]
    engine = Engine(**setup.engine_kwargs, store=store, cache=opts.cache)
    async with engine:
        run = await engine.resume(
            run_id,
            job.tasks,
            reconfigure=reconfigure,
            blueprints=setup.blueprints,
            config=snap.config,
        )
        return await _follow(run, job, sink, opts)


def _choice_dict(choice: EngineChoice) -> dict[str, Any]:
    c = dataclasses.asdict(choice)
    c["config"] = None if choice.config is None else str(Path(choice.config).resolve())
    return c


def _stored_engine_choice(config: Mapping[str, Any]) -> EngineChoice:
    from fanout.setup import EngineChoice

    raw = dict(config.get("choice") or {})
    if raw.get("config") is not None:
        raw["config"] = Path(raw["config"])
    return EngineChoice(**raw)


async def _follow(run: Run, job: CanvasJob, sink: CanvasSink, opts: RunOptions) -> CanvasOutcome:
    opts.on_start(run.id)
    sink.attach(run)
    with interrupts(run, opts.grace_s, opts.say):
        await show_progress(run, opts.progress)
        metrics = await run.wait()
        report = await sink.finish(run)
    return CanvasOutcome(run.id, job, metrics, report, run.status == "interrupted")
