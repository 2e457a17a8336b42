"""`Run`: one submitted set of tasks, its bookkeeping, and the handle a user holds on it.

A run talks to whoever runs it through `RunOwner` (the engine's ledger), so it never
knows the engine: asking it to add, cancel or interrupt goes through five small calls.
"""

from __future__ import annotations

import asyncio
import operator
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from fanout.engine.budget import RunBudget
from fanout.engine.events import Event, EventBus, Listener, RunStarted, Subscription
from fanout.engine.metrics import RunMetrics
from fanout.engine.numbered import Numbered
from fanout.engine.retry import RetryPolicy
from fanout.tasks import Result, Task, TaskState


class RunOwner(Protocol):
    """What a run asks of the engine that runs it."""

    def add_tasks(self, run: Run, tasks: list[Task]) -> list[Task]: ...

    def interrupt(self, run: Run, grace_s: float | None) -> None: ...

    def cancel_run(self, run: Run, reason: str) -> None: ...

    def cancel_task(self, task: Task, reason: str) -> bool: ...

    def ack(self, run: Run, sink: str, position: int) -> None: ...

    async def stored_results(self, run: Run) -> list[Result]: ...

    async def sink_position(self, run: Run, sink: str) -> int: ...

    async def flush(self) -> None: ...


if TYPE_CHECKING:

    def run_of(t: Task) -> Run:
        """The run `t` was submitted in (the engine only calls this on submitted tasks)."""
        ...

else:  # the same, as a C call: the hot path asks it several times per task
    run_of = operator.attrgetter("run")


class Run:
    """A run: its tasks, counts and events. Created by `Engine.submit` or `Engine.resume`.

    The plain fields below the user's methods are the engine's bookkeeping (its ledger
    keeps them): read them, never set them."""

    def __init__(
        self,
        owner: RunOwner,
        run_id: str,
        *,
        kind: str,
        config: Mapping[str, Any],
        retry: RetryPolicy,
        retry_budget: int | None,
        concurrency: int,
        budget: RunBudget,
    ) -> None:
        self.id = run_id
        self.kind = kind
        self.config = dict(config)
        self._owner = owner
        self._retry = retry
        #: a task's slot is None once `forget` has let it go (a streamed run keeps only
        #: its window in memory; the store keeps the rest, and `Numbered` drops the
        #: empty slots before the oldest live task)
        self.tasks: Numbered[Task] = Numbered()
        self.by_key: dict[str, Task] = {}
        self.results_by_n: Numbered[Result] = Numbered()
        self.bus = EventBus()
        self.metrics_ = RunMetrics(run_id, concurrency)
        self.bus.listen(self.metrics_)
        self.finished = 0  # tasks whose terminal result is durable
        self.forgotten: dict[TaskState, int] = {}  # tasks let go by `forget`, by state
        self.retries = 0
        self.retry_budget_fixed = retry_budget
        self.expected = 0  # tasks the run is told it will have (see `expect`)
        self.status = "running"
        self.cancel_reason: str | None = None
        self.callback_errors: list[str] = []
        self.deadline_handle: asyncio.TimerHandle | None = None
        self.grace_handle: asyncio.TimerHandle | None = None
        self.interrupting = False  # interrupt(): start nothing new, stay resumable
        #: (cache key, request hash) of tasks between their first request and their result
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.resumed = False
        self.budget = budget  # what the run spends, and its caps
        self._done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- what a user calls ----------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.tasks)

    @property
    def done(self) -> bool:
        return self._done.done()

    async def wait(self) -> dict[str, Any]:
        """Wait until every task is terminal and durable; return the run's metrics."""
        await asyncio.shield(self._done)
        return self.metrics()

    async def stored(self) -> None:
        """Wait until the run's opening (its id, config and tasks so far) is in the store:
        from then on `fanout resume <id>` knows it, even if this process dies at once."""
        await self._owner.flush()

    def add(self, tasks: Iterable[Task]) -> list[Task]:
        """Add tasks to this running run (they may depend on its existing tasks)."""
        return self._owner.add_tasks(self, list(tasks))

    def interrupt(self, grace_s: float | None = None) -> None:
        """Start nothing new; let running calls finish (stopping them after `grace_s`);
        the run ends "interrupted" and `engine.resume(run.id)` goes on with it."""
        self._owner.interrupt(self, grace_s)

    def cancel(self, reason: str = "cancelled by the user") -> None:
        """Start nothing new; abort running calls; every unfinished task ends `cancelled`."""
        self._owner.cancel_run(self, reason)

    def cancel_task(self, task: Task | str, reason: str = "cancelled by the user") -> bool:
        """Cancel one task (by object, key or id); False if it had already finished."""
        t = self.find(task) if not isinstance(task, Task) else task
        return self._owner.cancel_task(t, reason)

    def find(self, ref: str) -> Task:
        t = self.by_key.get(ref)
        if t is not None:
            return t
        prefix = self.id + "-"
        if ref.startswith(prefix) and ref[len(prefix) :].isdigit():
            n = int(ref[len(prefix) :])
            if n < len(self.tasks) and (found := self.tasks[n]) is not None:
                return found
        for t in self.tasks:
            if t is not None and t.key == ref:
                return t
        raise KeyError(f"run {self.id} has no task with key or id {ref!r}")

    async def results(self) -> list[Result]:
        """The durable results so far, in task order (read from the store)."""
        return await self._owner.stored_results(self)

    async def sink_position(self, sink: str) -> int:
        """Where sink `sink` acknowledged it had got to in this run (-1 when never)."""
        return await self._owner.sink_position(self, sink)

    def result(self, task: Task | str) -> Result | None:
        t = self.find(task) if not isinstance(task, Task) else task
        return self.results_by_n[t.n]

    def forget(self, task: Task) -> bool:
        """Let a finished task and its result go from memory (the store keeps both): a
        long streamed run holds only what is unfinished. A forgotten task can no longer be
        found, be depended on by tasks added later, or have its result read here (read it
        from the store). False, and nothing changes, when `task` is not yet durable."""
        n = task.n
        if not task.state.terminal or n >= len(self.tasks) or self.tasks[n] is not task:
            return False
        result = self.results_by_n[n]
        if result is not None:
            self.budget.retire(result)
        self.tasks.release(n)
        self.results_by_n[n] = None
        self.results_by_n.cut(self.tasks.base)
        if task.has_explicit_key and self.by_key.get(task.key) is task:
            del self.by_key[task.key]
        self.forgotten[task.state] = self.forgotten.get(task.state, 0) + 1
        return True

    def expect(self, total: int) -> None:
        """The run will have `total` tasks in all, though they are added a few at a time (a
        streamed batch): its retry budget is sized from that, not from what is added yet."""
        self.expected = max(self.expected, total)

    def live_tasks(self) -> list[Task]:
        """The tasks still in memory (all of them unless some were forgotten)."""
        return [t for t in self.tasks if t is not None]

    def ack(self, sink: str, position: int) -> None:
        """Record in the store that sink `sink` has written this run up to `position`."""
        self._owner.ack(self, sink, position)

    def metrics(self) -> dict[str, Any]:
        try:
            now = asyncio.get_running_loop().time()
        except RuntimeError:  # after asyncio.run() returned: the loop's clock is monotonic
            now = time.monotonic()
        snap = self.metrics_.snapshot(now)
        snap["retry_budget"] = self.retry_budget
        b = self.budget
        b.account(self.results_by_n)
        snap["cost_usd"] = round(b.spent_usd, 6)
        if b.max_cost_usd is not None:
            snap["max_cost_usd"] = b.max_cost_usd
        if b.max_tokens is not None:
            snap["max_tokens"] = b.max_tokens
        if self.cancel_reason:
            snap["cancel_reason"] = self.cancel_reason
        if self.callback_errors or self.bus.errors:
            snap["callback_errors"] = self.callback_errors + self.bus.errors
        return snap

    def listen(self, fn: Listener) -> None:
        """Call `fn(event)` for each of this run's events from now on, synchronously, in
        the engine's loop (keep it quick; an exception is recorded, never raised)."""
        self.bus.listen(fn)

    @property
    def stats(self) -> RunMetrics:
        """The run's live counters (per lane too), kept up to date from its events."""
        return self.metrics_

    def events(self, maxsize: int = 10_000) -> Subscription:
        """`async for event in run.events()`: this run's `RunStarted`, then its events from
        now on, ending with `RunFinished`. A consumer that falls more than `maxsize` behind
        gets an `EventsDropped` marker in place of what it missed."""
        if self.done or self.status != "running":  # the bus is closed once RunFinished is out
            sub = Subscription(maxsize)
            sub.close()
            return sub
        sub = self.bus.subscribe(maxsize)
        if self.metrics_.started_at is not None:  # emitted inside submit(): replay it
            sub.push(RunStarted(self.metrics_.started_at, self.id, self.total))
        return sub

    # -- the engine's side ----------------------------------------------------------------

    @property
    def retry_budget(self) -> int:
        fixed = self.retry_budget_fixed
        return self._retry.budget_for(max(self.total, self.expected)) if fixed is None else fixed

    def emit(self, event: Event) -> None:
        self.bus.emit(event)

    def counts(self) -> dict[str, int]:
        c = {s.value: 0 for s in TaskState}
        for t in self.tasks:
            if t is not None:
                c[t.state.value] += 1
        for state, k in self.forgotten.items():
            c[state.value] += k
        return c

    def resolve(self) -> None:
        """Everything of the run is durable: `wait()` returns."""
        if not self._done.done():
            self._done.set_result(None)

    def fail(self, reason: str, error: BaseException) -> None:
        """The run cannot go on (its store failed): `wait()` raises `error`."""
        if self._done.done():
            return
        self.status = "failed"
        self.cancel_reason = reason
        self._done.set_exception(error)
        self._done.exception()  # mark it retrieved: wait() re-raises it

    def __repr__(self) -> str:
        return f"Run({self.id!r}, {self.finished}/{self.total} finished, {self.status})"
