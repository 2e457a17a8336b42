"""Typed events, one per transition, and the bus that delivers them.

Listeners registered with `EventBus.listen` are called synchronously for every event (the
metrics are one: they never lose an event); one that raises is noted in `errors` and never
stops a run. `EventBus.subscribe` gives an async iterator over a bounded queue (progress
displays, `run.events()`, the service's SSE): when its consumer falls behind, the oldest
events are dropped and an `EventsDropped` marker says how many, so a slow reader can never
slow the engine or grow memory without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, TypeVar

from fanout.tasks import ErrorInfo, Result, TaskState

if TYPE_CHECKING:
    from fanout.tasks import Task

DEFAULT_SUBSCRIPTION_SIZE = 10_000
MAX_LISTENER_ERRORS = 10  # the first few are enough to find a broken listener


_E = TypeVar("_E")


def _quick_init(cls: type[_E]) -> type[_E]:
    """The same `__init__` for a frozen slotted dataclass of required fields, made cheaper:
    a frozen dataclass's own sets each field through `object.__setattr__` (a lookup by
    name each time); this one calls each slot's setter directly. For the events made once
    or twice per task (a run of 100,000 tasks makes 200,000 of them); still frozen after."""
    names = []
    ns: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        assert f.init and f.default is MISSING and f.default_factory is MISSING, f
        names.append(f.name)
        slot = next(k.__dict__[f.name] for k in cls.__mro__ if f.name in k.__dict__)
        ns[f"_set_{f.name}"] = slot.__set__
    body = "".join(f"\n    _set_{n}(self, {n})" for n in names)
    exec(f"def __init__(self, {', '.join(names)}):{body}", ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    setattr(cls, "__init__", init)  # noqa: B010 (mypy keeps the dataclass's signature)
    return cls


@dataclass(slots=True, frozen=True)
class Event:
    t: float  # loop time (monotonic seconds)


@dataclass(slots=True, frozen=True)
class RunStarted(Event):
    run_id: str
    total: int


@dataclass(slots=True, frozen=True)
class TasksAdded(Event):
    run_id: str
    count: int
    total: int
    lanes: dict[str, int]  # how many of the added tasks each lane got


@dataclass(slots=True, frozen=True)
class TaskEvent(Event):
    task: Task

    @property
    def task_id(self) -> str:
        return self.task.id


@_quick_init
@dataclass(slots=True, frozen=True)
class TaskStarted(TaskEvent):
    attempt: int
    lane: str


@dataclass(slots=True, frozen=True)
class TaskRetrying(TaskEvent):
    """An attempt failed and the task will try again after `delay` seconds."""

    attempt: int
    lane: str
    duration: float  # of the failed attempt
    error: ErrorInfo
    delay: float


@dataclass(slots=True, frozen=True)
class TaskInterrupted(TaskEvent):
    """An attempt stopped by an interrupt: the task waits for the run to be resumed."""

    attempt: int
    lane: str
    duration: float


@_quick_init
@dataclass(slots=True, frozen=True)
class TaskFinished(TaskEvent):
    """The task reached a terminal state and its result is durable."""

    state: TaskState
    lane: str
    duration: float  # of the attempt that ended it; -1 when it ended without one
    result: Result


@dataclass(slots=True, frozen=True)
class TaskSlow(TaskEvent):
    elapsed: float


@dataclass(slots=True, frozen=True)
class LimiterChanged(Event):
    """A provider limiter paused (Retry-After) or changed its adaptive concurrency."""

    key: str
    limit: float
    paused_for: float


@dataclass(slots=True, frozen=True)
class ProviderDown(Event):
    """A provider's circuit opened: nothing new is sent to it but a probe now and then."""

    key: str  # the provider meter's key (provider + model + key hash)
    since: float  # loop time
    error: str  # the failure that opened it


@dataclass(slots=True, frozen=True)
class ProviderUp(Event):
    """A provider answered again: its circuit closed after `down_s` seconds."""

    key: str
    down_s: float


@dataclass(slots=True, frozen=True)
class RunFinished(Event):
    run_id: str
    status: str  # done | failed | cancelled | interrupted
    counts: dict[str, int]


@dataclass(slots=True, frozen=True)
class EventsDropped(Event):
    """This subscriber fell behind; `count` events before this one were dropped."""

    count: int


Listener = Callable[[Event], Any]


class Subscription:
    """A bounded queue of events for one async consumer."""

    __slots__ = ("_closed", "_items", "_maxsize", "_waiter", "dropped")

    def __init__(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> None:
        self._items: deque[Event] = deque()
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.dropped = 0

    def push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._items) >= self._maxsize:
            self._items.popleft()
            self.dropped += 1
        self._items.append(event)
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def close(self) -> None:
        self._closed = True
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Event]:
        reported = 0
        while True:
            if self.dropped > reported:
                n = self.dropped - reported
                reported = self.dropped
                yield EventsDropped(t=asyncio.get_running_loop().time(), count=n)
            if self._items:
                yield self._items.popleft()
                continue
            if self._closed:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


class EventBus:
    __slots__ = ("_listeners", "_subs", "errors")

    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self._subs: list[Subscription] = []
        self.errors: list[str] = []  # what listeners raised (a broken one must not stop runs)

    def listen(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def subscribe(self, maxsize: int = DEFAULT_SUBSCRIPTION_SIZE) -> Subscription:
        sub = Subscription(maxsize)
        self._subs.append(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        sub.close()

    def emit(self, event: Event) -> None:
        for fn in self._listeners:
            try:
                fn(event)
            except Exception as exc:
                if len(self.errors) < MAX_LISTENER_ERRORS:
                    self.errors.append(f"listener {fn!r} raised {exc!r} on {type(event).__name__}")
        for sub in self._subs:
            sub.push(event)

    def close(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs.clear()
