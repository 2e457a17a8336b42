"""`fanout canvas`: a canvas in, its marked nodes explained by agents in parallel, the
explanations back on the canvas as notes, file nodes and labelled edges.

`plan_canvas` turns a canvas into tasks (one per target and agent, or with `smart`,
scoring first and then the agents its verdict calls for, as one DAG: every follower
depends on the target's scoring samples and runs only when the median verdict selects
it). `CanvasSink` writes each target's notes as soon as all of its tasks have ended,
batching the targets that finish together into one locked merge of the canvas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fanout.canvas import aggregate
from fanout.canvas.aggregate import SCORING_AGENT, Mode, parse_mode
from fanout.canvas.io import load_canvas
from fanout.canvas.language import canvas_language
from fanout.canvas.merge import NoteResult, SkippedResult, WriteOptions, reserve_places
from fanout.canvas.model import DEFAULT_TARGET_COLOUR, Canvas
from fanout.canvas.targets import Selection, Target, find_targets
from fanout.canvas.writeback import NoteWrite, WriteReport, write_results_async
from fanout.engine.events import Event, TaskFinished
from fanout.errors import ConfigError
from fanout.tasks import Priority, Result, Task, TaskState

if TYPE_CHECKING:
    from fanout.agents import Blueprint
    from fanout.engine.run import Run

#: which agents a scoring verdict calls for (configurable)
DEFAULT_SMART: dict[str, tuple[str, ...]] = {
    "not_understood": ("clarification-path", "oral-explanation", "basic-decomposition"),
    "partial": ("memory-anchor", "comparison-table", "verification-question-agent"),
    "mastered": ("verification-question-agent",),
}
KEY_SEP = "/"


@dataclass(slots=True)
class CanvasJob:
    """A canvas turned into tasks; nothing has run or been written."""

    path: Path
    canvas: Canvas
    selection: Selection
    agents: tuple[str, ...]
    smart: bool
    samples: int
    tasks: list[Task]
    smart_map: Mapping[str, Sequence[str]] = field(default_factory=dict)
    #: agent (or merged document) -> the label of its edges, in the canvas's language
    edge_labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def targets(self) -> list[Target]:
        return self.selection.targets


def task_key(target_id: str, agent: str, sample: int | None = None) -> str:
    """Stable task key: a rerun or a resume finds the same call under the same key."""
    base = f"{target_id}{KEY_SEP}{agent}"
    return base if sample is None else f"{base}#{sample}"


def plan_canvas(
    path: str | Path,
    blueprints: Mapping[str, Blueprint],
    *,
    agents: Sequence[str] | None = None,
    smart: bool | None = None,
    colour: str | None = None,
    ids: Sequence[str] | None = None,
    group: str | None = None,
    samples: int = 1,
    smart_map: Mapping[str, Sequence[str]] | None = None,
) -> CanvasJob:
    """Read the canvas and plan the run. Raises `InputError` for a bad canvas and
    `ConfigError` for an unknown agent or a bad option; writes nothing.

    `colour` None means not given: every text node of `group`, else the spec's yellow."""
    if samples < 1:
        raise ConfigError(f"--samples {samples}: at least 1")
    smart = (not agents) if smart is None else smart
    mapping = dict(smart_map or DEFAULT_SMART)
    wanted: list[str] = list(agents or [])
    if smart:
        for names in mapping.values():
            wanted.extend(n for n in names if n not in wanted)
        if SCORING_AGENT not in wanted:
            wanted.insert(0, SCORING_AGENT)
    unknown = [a for a in wanted if a not in blueprints]
    if unknown:
        raise ConfigError(
            f"unknown agent {unknown[0]!r}; known agents: {', '.join(sorted(blueprints))}"
        )
    if not wanted:
        raise ConfigError("no agents chosen: give --agents a,b or --smart")
    p = Path(path)
    canvas = load_canvas(p)
    sel = find_targets(
        canvas, colour=effective_colour(colour, group), ids=list(ids) if ids else None, group=group
    )
    tasks: list[Task] = []
    for target in sel.targets:
        tasks.extend(_tasks_for(target, blueprints, wanted, smart, samples, mapping))
    labels = edge_labels(canvas_language(canvas), [blueprints[a] for a in wanted])
    return CanvasJob(p, canvas, sel, tuple(wanted), smart, samples, tasks, mapping, labels)


def edge_labels(language: str, blueprints: Sequence[Blueprint]) -> dict[str, str]:
    """Each agent's display name in `language` (the blueprint's `title`, falling back to
    English, then the id), and the merged documents' names the same way."""
    labels = {bp.name: bp.display_name(language) for bp in blueprints}
    for name, title in aggregate.DOCUMENT_TITLES.items():
        zh, _, en = title.partition(" / ")
        labels[name] = zh if language == "zh" else en or name
    return labels


def effective_colour(colour: str | None, group: str | None) -> str | None:
    """The colour that picks targets: the one given; none for `--group` alone (all its text
    nodes); else the spec's yellow."""
    if colour is not None:
        return colour
    return None if group is not None else DEFAULT_TARGET_COLOUR


def _tasks_for(
    target: Target,
    blueprints: Mapping[str, Blueprint],
    wanted: Sequence[str],
    smart: bool,
    samples: int,
    mapping: Mapping[str, Sequence[str]],
) -> list[Task]:
    inputs = target.inputs()
    tid = target.node_id

    def meta(agent: str, sample: int | None = None) -> dict[str, Any]:
        m: dict[str, Any] = {"target": tid, "agent": agent}
        if sample is not None:
            m["sample"] = sample
        return m

    def make(agent: str, **kw: Any) -> Task:
        bp = blueprints[agent]
        bp_inputs = {k: v for k, v in inputs.items() if k in bp.inputs}
        task: Task = bp.task(bp_inputs, partition=tid, **kw)
        return task

    out: list[Task] = []
    if not smart:
        for agent in wanted:
            if agent == SCORING_AGENT and samples > 1:
                out += [
                    make(agent, key=task_key(tid, agent, i), sample=i, meta=meta(agent, i))
                    for i in range(samples)
                ]
            else:
                out.append(make(agent, key=task_key(tid, agent), meta=meta(agent)))
        return out
    scores = [
        make(
            SCORING_AGENT,
            key=task_key(tid, SCORING_AGENT, i if samples > 1 else None),
            sample=i,
            priority=Priority.HIGH,  # it decides what follows: start it first
            meta=meta(SCORING_AGENT, i if samples > 1 else None),
        )
        for i in range(samples)
    ]
    out += scores
    for agent in wanted:
        if agent == SCORING_AGENT:
            continue
        verdicts = frozenset(v for v, names in mapping.items() if agent in names)
        out.append(
            make(
                agent,
                key=task_key(tid, agent),
                depends_on=scores,
                on_dependency_failure="run",  # decide on the samples that succeeded
                when=_selected_by(verdicts),
                meta=meta(agent),
            )
        )
    return out


def _selected_by(verdicts: frozenset[str]) -> Callable[[Mapping[str, Result]], bool]:
    def when(deps: Mapping[str, Result]) -> bool:
        return median_verdict(deps.values()) in verdicts

    return when


def median_verdict(samples: Iterable[Result]) -> str | None:
    """The verdict of the median total of the scoring samples that succeeded."""
    totals = [
        float(r.data["total"])
        for r in samples
        if r.ok and isinstance(r.data, Mapping) and isinstance(r.data.get("total"), int | float)
    ]
    return aggregate.verdict_for(statistics.median(totals)) if totals else None


def documents_for(results: Sequence[Result], mode: Mode) -> list[aggregate.Document]:
    """A target's results (every task of it, in plan order) as the documents to write."""
    scoring = [r for r in results if r.task.agent == SCORING_AGENT]
    by_agent: dict[str, Result] = {}
    for r in results:
        agent = r.task.agent or ""
        if agent != SCORING_AGENT and r.state is not TaskState.SKIPPED:
            by_agent[agent] = r
    score_docs: list[aggregate.Document] = []
    if len(scoring) > 1 or (mode == "score" and scoring):
        summary = aggregate.score_summary(scoring)
        score_docs = [summary] if summary is not None else []
    elif scoring:
        score_docs = aggregate.individual({SCORING_AGENT: scoring[0]})
    if mode == "score":
        return score_docs
    if mode == "merged":
        merged_in = {SCORING_AGENT: scoring[0], **by_agent} if len(scoring) == 1 else by_agent
        docs = aggregate.merged(merged_in)
        return (score_docs if len(scoring) > 1 else []) + docs
    if mode == "decomposition":
        report = aggregate.decomposition_report(by_agent)
        rest = {a: r for a, r in by_agent.items() if a not in aggregate.DECOMPOSITION_AGENTS}
        return score_docs + report + aggregate.individual(rest)
    return score_docs + aggregate.individual(by_agent)


def note_slots(job: CanvasJob, mode: Mode) -> list[tuple[str, int]]:
    """(target id, the most notes `documents_for` can make for it), in plan order: a
    follower of `--smart` counts only under the verdict that calls for the most."""
    agents: dict[str, list[str]] = {}
    for t in job.tasks:
        names = agents.setdefault(t.partition or "", [])
        if t.agent and t.agent not in names:
            names.append(t.agent)
    out = []
    for target, names in agents.items():
        scoring = SCORING_AGENT in names
        others = [a for a in names if a != SCORING_AGENT]
        if job.smart:
            others_n = max((len(set(v) & set(others)) for v in job.smart_map.values()), default=0)
        else:
            others_n = len(others)
        if mode == "score":
            n = int(scoring)
        elif mode == "merged":
            n = 1 + int(scoring and job.samples > 1)
        else:
            n = int(scoring) + others_n
        out.append((target, n))
    return out


@dataclass(slots=True)
class SinkReport:
    reports: list[WriteReport] = field(default_factory=list)
    written_targets: int = 0
    write_s: float = 0.0  # time spent writing the canvas and notes

    @property
    def notes(self) -> list[NoteWrite]:
        return [n for r in self.reports for n in r.notes]

    @property
    def not_written(self) -> list[SkippedResult]:
        """Results that could not be written (their target gone, ...): failures."""
        return [s for r in self.reports for s in r.skipped if not s.deleted]

    @property
    def left_deleted(self) -> list[SkippedResult]:
        """Notes the learner deleted, left out as the learner wanted."""
        return [s for r in self.reports for s in r.skipped if s.deleted]


class CanvasSink:
    """Writes a target's documents once every task of it has ended; targets that end while
    a write is under way go together in the next one (one lock, one merge, one replace)."""

    name = "canvas"

    def __init__(self, job: CanvasJob, mode: Mode, options: WriteOptions | None = None) -> None:
        self.job = job
        self.mode: Mode = parse_mode(mode)
        options = dataclasses.replace(options or WriteOptions(), edge_labels=job.edge_labels)
        if options.reserved is None:  # every place planned now: writes come in any order
            reserved = reserve_places(
                job.canvas, note_slots(job, self.mode), node_size=options.node_size, gap=options.gap
            )
            options = dataclasses.replace(options, reserved=reserved)
        self.options = options
        self.report = SinkReport()
        self._left: dict[str, int] = {}
        for t in job.tasks:
            part = t.partition or ""
            self._left[part] = self._left.get(part, 0) + 1
        self._results: dict[str, list[Result]] = {}
        self._pending: list[NoteResult] = []
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._closing = False

    def attach(self, run: Run) -> None:
        # the run names the canvas backups it makes: `canvas restore` undoes all of them
        self.options = dataclasses.replace(self.options, run_id=run.id)
        run.listen(self._on_event)
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        for t in self.job.tasks:  # a resumed run: results already in the store count
            r = run.result(t)
            if r is not None and r.state.terminal:
                part = t.partition or ""
                self._results.setdefault(part, []).append(r)
                self._left[part] -= 1
                if self._left[part] == 0:
                    self._queue_target(part)

    def _on_event(self, ev: Event) -> None:
        if not isinstance(ev, TaskFinished):
            return
        part = ev.task.partition or ""
        self._results.setdefault(part, []).append(ev.result)
        self._left[part] -= 1
        if self._left[part] == 0:
            self._queue_target(part)

    def _catch_up(self, run: Run) -> None:
        by_part: dict[str, list[Task]] = {}
        for t in self.job.tasks:
            by_part.setdefault(t.partition or "", []).append(t)
        for part, left in list(self._left.items()):
            if left <= 0:
                continue
            results = [run.result(t) for t in by_part.get(part, [])]
            if results and all(r is not None and r.state.terminal for r in results):
                self._results[part] = [r for r in results if r is not None]
                self._left[part] = 0
                self._queue_target(part)

    def _queue_target(self, part: str) -> None:
        order = {id(t): i for i, t in enumerate(self.job.tasks)}
        results = sorted(self._results.pop(part, []), key=lambda r: order.get(id(r.task), 0))
        for doc in documents_for(results, self.mode):
            self._pending.append(NoteResult(part, doc.name, doc.text, doc.title, doc.verdict))
        self.report.written_targets += 1
        self._wake.set()

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending, []
                t0 = loop.time()
                try:
                    report = await write_results_async(self.job.path, batch, self.options)
                except Exception as exc:  # the canvas is as it was; report it at the end
                    self._error = exc
                    return
                finally:
                    self.report.write_s += loop.time() - t0
                self.report.reports.append(report)
            if self._closing:
                return

    async def finish(self, run: Run | None = None) -> SinkReport:
        """Write whatever is pending, then stop; raise what a write raised. With `run`, a
        target whose results all came from the store (a resumed run) is written too."""
        if run is not None:
            self._catch_up(run)
        self._closing = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
        if self._error is not None:
            raise self._error
        return self.report

    def abort(self) -> None:
        """Stop writing: what is written stays (each write is whole), the rest is dropped."""
        self._closing = True
        self._pending.clear()
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()
