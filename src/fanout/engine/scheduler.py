"""The ready structure: which task starts when a worker is free.

Ready tasks live in groups, one per (lane, agent, provider limiter); each group holds one
queue per priority level (FIFO, or longest-expected-first as a heap). When a worker asks,
the scheduler looks at the head of every level of every non-empty group whose meters have
room and starts the one with the highest *effective* priority: its level plus the time it
has waited divided by `aging_s` (so a low task that waited long enough beats a fresh
urgent one); ties go to the earlier-queued task, then the earlier-submitted one. With
longest-first, the level plus whole aging steps is compared first, then the expected
duration, so longer tasks start first across agents too. Groups are few (lanes x agents
x models), so a pick costs a handful of comparisons however many tasks wait.

Tasks that must wait (a retry's backoff) sit in a timer heap and join their group when due.
When nothing can start, workers park on futures; a timer wakes them at the earliest time a
budget frees or a delayed task comes due.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import operator
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fanout.engine.limits import Meter, ProviderMeter
from fanout.engine.spans import BACKOFF, QUEUED, WaitClock, close
from fanout.errors import ConfigError
from fanout.tasks import Task, TaskState

INF = math.inf
LEVELS = (3, 2, 1, 0)  # urgent, high, normal, low
READY = TaskState.READY
_LEF_MAX = 0.999999  # an expected duration only orders tasks inside one effective level


class Group:
    """Ready tasks sharing one set of meters."""

    __slots__ = (
        "clock",
        "dropped",
        "heaps",
        "key",
        "lane",
        "lef",
        "limiter",
        "meters",
        "plain",
        "queues",
    )

    def __init__(
        self,
        key: tuple[str, str, str],
        meters: Sequence[Meter],
        *,
        lef: bool,
        limiter: ProviderMeter | None = None,
    ) -> None:
        self.key = key
        self.lane = key[0]
        self.meters = tuple(meters)
        self.limiter = limiter  # the provider meter among `meters`, if any
        # no expected durations to order by and no token budget to estimate for
        self.plain = not lef and (limiter is None or limiter.tpm is None)
        self.lef = lef
        self.queues: list[deque[Task]] = [deque() for _ in LEVELS]
        self.heaps: list[list[tuple[float, int, Task]]] = [[] for _ in LEVELS]
        self.dropped = 0  # tasks cancelled while queued, found and dropped by head()
        self.clock = WaitClock()  # how long its meters held it back, per cause

    def queued(self) -> int:
        """How many tasks wait in it (cancelled ones not yet dropped included)."""
        if self.lef:
            return sum(len(h) for h in self.heaps)
        return sum(len(q) for q in self.queues)

    def push(self, task: Task, expected: float, seq: int) -> None:
        if self.lef:
            heapq.heappush(self.heaps[task.priority], (-expected, seq, task))
        else:
            self.queues[task.priority].append(task)

    def head(self, level: int) -> Task | None:
        """The next task of a level, dropping tasks cancelled while they waited."""
        if self.lef:
            h = self.heaps[level]
            while h and h[0][2].state is not READY:
                heapq.heappop(h)
                self.dropped += 1
            return h[0][2] if h else None
        q = self.queues[level]
        while q and q[0].state is not READY:
            q.popleft()
            self.dropped += 1
        return q[0] if q else None

    def pop(self, level: int) -> None:
        if self.lef:
            heapq.heappop(self.heaps[level])
        else:
            self.queues[level].popleft()

    def empty(self) -> bool:
        if self.lef:
            return not any(self.heaps)
        return not any(self.queues)


if TYPE_CHECKING:

    def group_of(t: Task) -> Group:
        """The group a bound task belongs to (the engine only calls this on bound tasks)."""
        ...

else:  # the same, as a C call
    group_of = operator.attrgetter("group")


class Scheduler:
    def __init__(self, *, aging_s: float, loop: asyncio.AbstractEventLoop) -> None:
        if aging_s <= 0:
            raise ConfigError(f"aging_s={aging_s}: must be positive")
        self._inv_aging = 1.0 / aging_s
        self._loop = loop
        self._active: dict[Group, None] = {}  # non-empty groups, in insertion order
        self._delayed: list[tuple[float, int, Task, Group, float]] = []
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF
        self._seq = 0
        self.ready = 0  # tasks queued in groups (including lazily-cancelled ones)

    # -- queueing -------------------------------------------------------------------------

    def push(self, task: Task, group: Group, now: float, expected: float = 0.0) -> None:
        self._seq += 1
        task.state = READY
        task.enqueued_at = now
        if task.span_kind != QUEUED:  # after a backoff or a budget wait
            close(task, now, QUEUED)
        clock = group.clock
        # (reading only a clock that ever held the group back: most never do)
        task.span_base = clock.reading(now) if clock.acc or clock.why is not None else None
        group.push(task, expected, self._seq)
        self._active[group] = None
        self.ready += 1
        if self._waiters:
            self._wake_one()

    def push_later(self, task: Task, group: Group, due: float, expected: float = 0.0) -> None:
        """Queue `task` when `due` (loop time) comes: a retry's backoff, outside any slot."""
        task.state = READY
        self._seq += 1
        heapq.heappush(self._delayed, (due, self._seq, task, group, expected))
        self._arm(due)

    @property
    def delayed(self) -> int:
        return len(self._delayed)

    # -- picking --------------------------------------------------------------------------

    def pick(self, now: float) -> tuple[Task, Group] | None:
        """The task to start now, with its meters already charged; None if none can."""
        d = self._delayed
        while d and d[0][0] <= now:
            due, _, t, g, expected = heapq.heappop(d)
            if t.state is READY:
                if t.span_kind == BACKOFF:  # past `due` it waited for a worker, not backoff
                    close(t, due, QUEUED)
                self.push(t, g, now, expected)
        best: Task | None = None
        best_group: Group | None = None
        best_level = 0
        best_eff = -INF
        best_tie = (INF, 0)
        soonest = INF
        empties: list[Group] | None = None
        inv_aging = self._inv_aging
        for g in self._active:
            queues = None if g.lef else g.queues
            for level in LEVELS:
                head: Task | None
                if queues is not None:  # FIFO fast path: no call for an empty level
                    q = queues[level]
                    if not q:
                        continue
                    head = q[0] if q[0].state is READY else g.head(level)
                else:
                    head = g.head(level)
                if head is None:
                    continue
                eff = level + (now - head.enqueued_at) * inv_aging
                if g.lef:  # longest first inside an effective level, across groups too
                    x = -g.heaps[level][0][0]
                    eff = math.floor(eff) + min(x / (1.0 + x), _LEF_MAX)
                if eff > best_eff or (eff == best_eff and (head.enqueued_at, head.n) < best_tie):
                    wait = 0.0
                    holder: Meter | None = None
                    for m in g.meters:
                        w = m.wait_time(now, head)
                        if w > wait:
                            wait = w
                            holder = m
                            if w == INF:
                                break
                    if wait > 0.0:
                        assert holder is not None
                        g.clock.block(now, holder.why(now), wait)
                        if wait < soonest:
                            soonest = wait
                        break  # this group's meters are shut for every level
                    if g.clock.why is not None:
                        g.clock.open(now)
                    best, best_group, best_level, best_eff = head, g, level, eff
                    best_tie = (head.enqueued_at, head.n)
            else:
                if g.empty():
                    empties = empties or []
                    empties.append(g)
            if g.dropped:
                self.ready -= g.dropped
                g.dropped = 0
        if empties:
            for g in empties:
                del self._active[g]
        if soonest < INF:
            self._arm(now + soonest)
        if best is None or best_group is None:
            if d:
                self._arm(d[0][0])
            return None
        best_group.pop(best_level)
        self.ready -= 1
        for m in best_group.meters:
            m.started(now, best)
        if self._waiters and self.ready:
            # a finished attempt may have freed meters other groups wait on: pass it on
            self._wake_one()
        return best, best_group

    # -- parking workers ------------------------------------------------------------------

    async def wait(self) -> None:
        fut = self._loop.create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def _wake_one(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    def wake_all(self) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)

    def _arm(self, when: float) -> None:
        if when >= self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = when
        self._timer = self._loop.call_at(when, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = INF
        self.wake_all()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.wake_all()
