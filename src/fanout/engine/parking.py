"""`Parking`: tasks waiting for room under their run's cost cap, by run, first come first
served (the ledger decides when a task parks and when its run is out of budget)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from fanout.engine.plan import Planner
from fanout.engine.run import Run
from fanout.engine.scheduler import Group, Scheduler
from fanout.tasks import Task


class Parking:
    def __init__(self, loop: asyncio.AbstractEventLoop, sched: Scheduler, planner: Planner) -> None:
        self._loop = loop
        self._sched = sched
        self._planner = planner
        self._parked: dict[str, deque[tuple[Task, Group]]] = {}

    def park(self, run: Run, t: Task, g: Group) -> None:
        self._parked.setdefault(run.id, deque()).append((t, g))

    def drop(self, run: Run) -> None:
        self._parked.pop(run.id, None)

    def settled(self, run: Run, waits: Callable[[Task], bool]) -> None:
        """A call of `run` settled its estimate: one parked task that still `waits` tries
        again; all of them once none of the run's calls is in flight (then the first either
        fits or finds the run out of budget), so none is left behind."""
        parked = self._parked.get(run.id)
        if not parked:
            return
        everyone = run.budget.in_flight == 0
        while parked:
            t, g = parked.popleft()
            if waits(t) and not run.interrupting:
                expected = 0.0 if g.plain else self._planner.prepare(t, g)
                self._sched.push(t, g, self._loop.time(), expected)
                if not everyone:
                    return
