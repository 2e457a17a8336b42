"""Helpers shared by the engine tests: an event recorder and providers whose timing the
test controls (asyncio.Event gates), so no assertion depends on how fast the machine is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, TypeVar

from fanout import (
    CallableProvider,
    Event,
    MemoryStore,
    Request,
    TaskFinished,
    TaskRetrying,
    TaskStarted,
)
from fanout.store.base import Op, ResultRecorded

T = TypeVar("T")


def arun(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async test body in a fresh event loop."""
    return asyncio.run(main())


class Recorder:
    """A synchronous listener: every event of a run, in emission order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, ev: Event) -> None:
        self.events.append(ev)

    def of(self, cls: type[T]) -> list[T]:
        return [e for e in self.events if isinstance(e, cls)]

    def started(self) -> list[str]:
        """Task keys in the order their attempts started (a key repeats on retries)."""
        return [e.task.key for e in self.of(TaskStarted)]

    def finished(self) -> dict[str, TaskFinished]:
        out: dict[str, TaskFinished] = {}
        for e in self.of(TaskFinished):
            assert e.task.key not in out, f"two TaskFinished for {e.task.key}"
            out[e.task.key] = e
        return out

    def retried(self) -> list[TaskRetrying]:
        return self.of(TaskRetrying)


class Gated:
    """A provider function: a call whose prompt starts with a gated name waits until the
    test opens that gate; every call is recorded with its start order and outcome."""

    def __init__(self, gated: Iterable[str] = (), *, answer: str | None = None) -> None:
        self.gates: dict[str, asyncio.Event] = {g: asyncio.Event() for g in gated}
        self.started: dict[str, asyncio.Event] = {}
        self.calls: list[str] = []
        self.cancelled: list[str] = []
        self.requests: list[Request] = []
        self.answer = answer
        self.inflight = 0

    def started_event(self, name: str) -> asyncio.Event:
        ev = self.started.get(name)
        if ev is None:
            ev = self.started[name] = asyncio.Event()
        return ev

    async def wait_started(self, name: str, within: float = 10.0) -> None:
        await asyncio.wait_for(self.started_event(name).wait(), within)

    def open(self, name: str) -> None:
        self.gates[name].set()

    async def __call__(self, req: Request) -> str:
        name = req.prompt_text().split("\n", 1)[0]
        self.calls.append(name)
        self.requests.append(req)
        self.inflight += 1
        self.started_event(name).set()
        try:
            gate = self.gates.get(name)
            if gate is not None:
                await gate.wait()
            else:
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(name)
            raise
        finally:
            self.inflight -= 1
        return self.answer if self.answer is not None else f"answer to {name}"

    def provider(self, name: str = "python") -> CallableProvider:
        return CallableProvider(self.__call__, name=name)


class GatedStore(MemoryStore):
    """A MemoryStore whose writes wait while `gate` is closed: nothing becomes durable."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.gate.set()
        self.delay_s = 0.0  # a slow disk: every write takes this long
        self.durable: set[tuple[str, int]] = set()  # (run id, task number) with a result

    async def write(self, ops: Sequence[Op]) -> None:
        if not self.gate.is_set():
            await self.gate.wait()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        await super().write(ops)
        self.durable.update((op.run_id, op.n) for op in ops if isinstance(op, ResultRecorded))


async def until(cond: Callable[[], bool], within: float = 10.0) -> None:
    """Yield to the loop until `cond()` holds; fail the test if it has not after `within`
    seconds (a guard against a hang, never a measurement)."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + within
    while not cond():
        if loop.time() > give_up:
            raise AssertionError(f"condition still false after {within}s")
        await asyncio.sleep(0.001)


def overflow(meter: Any, now: float, *, calls: int | None = None) -> None:
    """Calls rejected with 429s at `now`, as many as make them half of the calls the meter saw
    end lately (`RATE_EDGE_SHARE` of `RATE_EDGE_SEEN`): the sign of a budget we are over,
    where a lone 429 amid successes may be noise. Each is started at `now` too."""
    from fanout import Task
    from fanout.engine.limits import RATE_EDGE_SEEN, RATE_EDGE_SHARE, RATE_LIMITED

    for i in range(calls if calls is not None else int(RATE_EDGE_SHARE * RATE_EDGE_SEEN)):
        t = Task(f"over {i}")
        meter.started(now, t)
        meter.finished(now, t, RATE_LIMITED, 0)
