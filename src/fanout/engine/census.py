"""`census`: what each task of a run is doing right now, by lane, in the spans' words.

The live display asks for it a few times a second. It reads the engine's own state (each
task's open span, its group's wait clock), never counts kept from events: those lag behind
the store (a task is done once its result is durable) and so may show more calls running
than there are workers. A call in flight is a task whose `run` span is open, so `running`
never passes the concurrency.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from fanout.engine.limits import ProviderMeter
from fanout.engine.plan import DEFAULT_LANE
from fanout.engine.scheduler import Group
from fanout.engine.spans import QUEUED, RUN
from fanout.tasks import Result, Task, TaskState

RUNNING = "running"
#: a task whose result is recorded but not yet durable
SAVING = "saving"
#: a task submitted and not started, without a span open (a run being interrupted)
WAITING = "waiting"
#: skipped because its `when` said no (a `--smart` task not chosen): not a failure
NOT_SELECTED = "not_selected"


@dataclass(slots=True)
class Census:
    lanes: dict[str, Counter[str]] = field(default_factory=dict)
    providers: dict[str, ProviderMeter] = field(default_factory=dict)

    def total(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for c in self.lanes.values():
            out.update(c)
        return out


def census(tasks: Sequence[Task | None], results: Sequence[Result | None], now: float) -> Census:
    """Each task in one word, counted per lane: `running`, a wait (`deps`, `queued`, `lane`,
    `rpm`, `tpm`, `retry_after`, `circuit`, `budget`, `backoff`), `saving`, or its final
    state (`done`, `failed`, `skipped`, `not_selected`, `cancelled`)."""
    out = Census()
    lanes = out.lanes
    groups: dict[int, Group] = {}
    for t in tasks:
        if t is None:  # let go by `Run.forget` once durable: its run's metrics count it
            continue
        lane = t.lane or DEFAULT_LANE
        counts = lanes.get(lane)
        if counts is None:
            counts = lanes[lane] = Counter()
        r = results[t.n] if t.n < len(results) else None
        if r is not None:
            if not t.state.terminal:
                counts[SAVING] += 1
            elif (
                r.state is TaskState.SKIPPED
                and r.error is not None
                and r.error.kind == "not_selected"
            ):
                counts[NOT_SELECTED] += 1
            else:
                counts[str(r.state)] += 1
            continue
        kind = t.span_kind
        g = t.group
        if isinstance(g, Group):
            groups.setdefault(id(g), g)
            if kind == QUEUED:
                kind = g.clock.held(now) or QUEUED
        counts[RUNNING if kind == RUN else kind or WAITING] += 1
    for g in groups.values():
        if g.limiter is not None:
            out.providers.setdefault(g.limiter.key, g.limiter)
    return out
