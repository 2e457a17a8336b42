"""`Slots`: what each worker is doing right now, and the means to stop it.

A slot is one unit of the global concurrency limit, held by one worker. Deadlines,
cancellation, interrupts and slow-task checks reach an attempt in flight through its
slot: an attempt is aborted by cancelling the worker's asyncio task with `abort` set, and
the worker turns that back into an ordinary outcome (`uncancel`). Per-attempt deadlines
share one timer armed at the earliest deadline, not one timer per call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from fanout.tasks import Task

INF = float("inf")

TIMEOUT = "\x00timeout"  # Slot.abort for a deadline (cannot collide with a reason)
INTERRUPT = "\x00interrupt"  # Slot.abort for an interrupt's stop


class Slot:
    """One worker's attempt in flight (or none)."""

    __slots__ = (
        "abort",
        "deadline",
        "first_token",
        "idle",
        "slow_reported",
        "started",
        "task",
        "worker",
    )

    def __init__(self) -> None:
        self.task: Task | None = None
        self.worker: asyncio.Task[None] | None = None
        self.started = 0.0
        self.deadline = INF  # loop time at which the attempt times out
        self.idle = False  # the deadline is a stream's idle timeout
        self.abort: str | None = None  # TIMEOUT, INTERRUPT or a cancellation reason
        self.slow_reported = False
        self.first_token: float | None = None  # loop time of a streamed attempt's first chunk

    def begin(self, t: Task, now: float) -> None:
        self.task = t
        self.started = now
        self.abort = None
        self.slow_reported = False
        self.idle = False
        self.first_token = None

    def end(self) -> None:
        self.task = None
        self.deadline = INF

    def abort_reason(self) -> str | None:
        # read through a call: the type checker cannot see that a cancel set it meanwhile
        return self.abort

    def stop(self, reason: str) -> bool:
        """Abort the attempt in flight with `reason`; False when there is none to abort."""
        if self.task is None or self.abort is not None or self.worker is None:
            return False
        self.abort = reason
        if self.worker is not asyncio.current_task():  # else: noticed before the call
            self.worker.cancel()
        return True


class Aborted(Exception):
    """An attempt stopped on purpose (a cancellation or an interrupt)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Slots:
    """The engine's slots and the one timer that enforces their deadlines."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._slots: list[Slot] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = INF

    def add(self) -> Slot:
        slot = Slot()
        self._slots.append(slot)
        return slot

    def __iter__(self) -> Iterator[Slot]:
        return iter(self._slots)

    # -- deadlines ------------------------------------------------------------------------

    def set_deadline(self, slot: Slot, when: float) -> None:
        slot.deadline = when
        if when < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer_at = when
            self._timer = self._loop.call_at(when, self._on_deadline)

    def _on_deadline(self) -> None:
        self._timer = None
        self._timer_at = INF
        now = self._loop.time()
        soonest = INF
        for slot in self._slots:
            d = slot.deadline
            if d <= now:
                slot.stop(TIMEOUT)
                slot.deadline = INF
            elif d < soonest:
                soonest = d
        if soonest < INF:
            self._timer_at = soonest
            self._timer = self._loop.call_at(soonest, self._on_deadline)

    # -- stopping -------------------------------------------------------------------------

    def stop_task(self, t: Task, reason: str) -> bool:
        """Abort `t`'s attempt in flight; False when it has none that can be aborted."""
        for slot in self._slots:
            if slot.task is t:
                return slot.stop(reason)
        return False

    def stop_run(self, run: object, reason: str = INTERRUPT) -> None:
        """Abort every attempt in flight of `run`."""
        for slot in self._slots:
            t = slot.task
            if t is not None and t.run is run:
                slot.stop(reason)

    def stop_all(self, reason: str) -> None:
        for slot in self._slots:
            slot.stop(reason)

    def running(self, run: object) -> bool:
        """Whether any attempt of `run` is in flight."""
        return any(s.task is not None and s.task.run is run for s in self._slots)

    def newly_slow(self, now: float, after_s: float) -> Iterator[Slot]:
        """Slots whose attempt passed `after_s` seconds since the last look (each once)."""
        for slot in self._slots:
            if slot.task is not None and not slot.slow_reported and now - slot.started > after_s:
                slot.slow_reported = True
                yield slot

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
