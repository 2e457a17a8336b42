"""Events: the async stream a library user reads, bounded subscriptions that drop and say
so while the metrics stay exact, and TaskFinished only once the result is durable."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from fanout import (
    CallableProvider,
    Engine,
    Event,
    EventsDropped,
    FanoutError,
    Request,
    RunFinished,
    RunStarted,
    Task,
    TaskFinished,
    TasksAdded,
    TaskStarted,
    TaskState,
)
from fanout.engine.events import Subscription
from fanout.store.base import Op

from .support import Gated, GatedStore, Recorder, arun, until


async def collect(sub: Subscription) -> list[Event]:
    return [ev async for ev in sub]


def test_run_events_starts_with_run_started_and_ends_after_run_finished() -> None:
    gated = Gated()

    async def main() -> list[Event]:
        async with Engine(providers=gated.provider(), concurrency=4) as engine:
            run = engine.submit([Task(f"q{i}", key=f"q{i}") for i in range(10)])
            reader = asyncio.create_task(collect(run.events()))
            await run.wait()
            events = await asyncio.wait_for(reader, 10)  # the iteration ends by itself
            assert run.status == "done"
            return events

    events = arun(main)
    assert isinstance(events[0], RunStarted)
    assert isinstance(events[-1], RunFinished)
    assert events[-1].status == "done"
    assert events[-1].counts["done"] == 10
    assert not any(isinstance(e, EventsDropped) for e in events)
    started = [e.task.key for e in events if isinstance(e, TaskStarted)]
    finished = [e.task.key for e in events if isinstance(e, TaskFinished)]
    assert sorted(started) == sorted(finished) == sorted(f"q{i}" for i in range(10))
    for key in started:  # each task's start precedes its end
        i = next(
            n for n, e in enumerate(events) if isinstance(e, TaskStarted) and e.task.key == key
        )
        j = next(
            n for n, e in enumerate(events) if isinstance(e, TaskFinished) and e.task.key == key
        )
        assert i < j
    times = [e.t for e in events]
    assert times == sorted(times)


def test_events_of_a_finished_run_end_at_once() -> None:
    async def main() -> None:
        late: list[Subscription] = []
        async with Engine(providers=Gated().provider()) as engine:
            run = engine.submit([Task("a")])

            def on_event(ev: Event) -> None:
                if isinstance(ev, RunFinished):  # closed, though wait() has not returned
                    late.append(run.events())

            run.listen(on_event)
            await run.wait()
            assert await asyncio.wait_for(collect(run.events()), 5) == []
            assert await asyncio.wait_for(collect(late[0]), 5) == []

    arun(main)


def test_a_slow_subscriber_gets_a_drop_marker_and_the_metrics_stay_exact() -> None:
    rec = Recorder()

    async def main() -> None:
        async with Engine(providers=Gated().provider(), concurrency=8) as engine:
            run = engine.submit([Task(f"q{i}") for i in range(50)])
            sub = run.events(maxsize=3)  # never read while the run goes on
            run.listen(rec)
            m = await run.wait()
            assert (m["done"], m["attempts"], m["total"], m["running"]) == (50, 50, 50, 0)
            assert sub.dropped > 0
            events = await asyncio.wait_for(collect(sub), 5)
            assert isinstance(events[0], EventsDropped)
            assert len(events) == 1 + 3
            assert isinstance(events[-1], RunFinished)
            # what was dropped plus what was kept is everything: RunStarted and the rest
            assert events[0].count + 3 == 1 + len(rec.events)

    arun(main)


def test_subscription_is_bounded_drops_oldest_and_counts() -> None:
    async def main() -> None:
        sub = Subscription(maxsize=2)
        for i in range(5):
            sub.push(RunStarted(float(i), "r", i))
        sub.close()
        sub.push(RunStarted(9.0, "r", 9))  # after close: ignored
        events = await collect(sub)
        assert isinstance(events[0], EventsDropped)
        assert events[0].count == 3
        assert [e.total for e in events[1:]] == [3, 4]  # type: ignore[attr-defined]

    arun(main)


def test_task_finished_fires_only_once_the_result_is_durable() -> None:
    gated = Gated()
    rec = Recorder()

    async def main() -> None:
        store = GatedStore()
        async with Engine(providers=gated.provider(), store=store, concurrency=2) as engine:
            store.gate.clear()
            run = engine.submit([Task("A", key="A"), Task("B", key="B", depends_on=["A"])])
            run.listen(rec)
            await until(lambda: gated.calls == ["A"] and gated.inflight == 0)
            await asyncio.sleep(0.05)  # plenty of loop turns: nothing may report A done
            assert rec.of(TaskFinished) == []
            assert gated.calls == ["A"]  # B depends on a result that is not durable yet
            assert run.result("A") is not None  # recorded, waiting for the store
            assert not run.done
            store.gate.set()
            await run.wait()
            assert [e.task.key for e in rec.of(TaskFinished)] == ["A", "B"]
            assert [r.key for r in await run.results()] == ["A", "B"]

    arun(main)
    assert gated.calls == ["A", "B"]


def test_every_task_finished_event_sees_its_result_in_the_store() -> None:
    store_box: list[GatedStore] = []
    problems: list[str] = []

    def check(ev: Event) -> None:
        if isinstance(ev, TaskFinished) and (ev.task.run.id, ev.task.n) not in store_box[0].durable:
            problems.append(f"{ev.task.id} reported before it was durable")

    async def main() -> None:
        store = GatedStore()
        store.delay_s = 0.002  # a slow disk: group commits of several results
        store_box.append(store)
        async with Engine(providers=Gated().provider(), store=store, concurrency=8) as engine:
            run = engine.submit(
                [
                    Task(f"q{i}", key=f"q{i}", depends_on=[f"q{i - 1}"] if i % 3 else [])
                    for i in range(60)
                ]
            )
            run.listen(check)
            await run.wait()
            assert run.metrics()["done"] == 60
            assert store.batches < 60  # results were grouped: fewer writes than results

    arun(main)
    assert problems == []


def test_tasks_added_is_an_event_and_dynamic_tasks_count_in_the_total() -> None:
    rec = Recorder()

    async def main() -> None:
        async with Engine(providers=Gated().provider()) as engine:
            run = engine.submit(
                [
                    Task(
                        "a",
                        key="a",
                        then=lambda r: [Task("b", key="b"), Task("c", key="c", lane="z")],
                    )
                ]
            )
            run.listen(rec)
            m = await run.wait()
            assert m["total"] == 3
            assert m["done"] == 3

    arun(main)
    added = rec.of(TasksAdded)
    assert len(added) == 1
    assert added[0].count == 2
    assert added[0].total == 3
    assert added[0].lanes == {"default": 1, "z": 1}


def test_wait_returns_the_metrics_and_results_come_from_the_store_in_task_order() -> None:
    async def main() -> None:
        async with Engine(providers=Gated().provider(), concurrency=5) as engine:
            run = engine.submit([Task(f"q{i}", key=f"q{i}") for i in range(12)])
            m = await run.wait()
            assert m["run_id"] == run.id
            assert m["status"] == "done"
            assert m["done"] == 12
            results = await run.results()
            assert [r.key for r in results] == [f"q{i}" for i in range(12)]
            assert [r.task_id for r in results] == [f"{run.id}-{i}" for i in range(12)]
            assert all(
                r.state is TaskState.DONE and r.text == f"answer to q{r.task.n}" for r in results
            )
            info = await engine.store.run_info(run.id)
            assert info is not None
            assert info["status"] == "done"
            assert info["results"] == 12

    arun(main)


class FailingStore(GatedStore):
    """Fails from its `fail_at`-th write on, like a full disk."""

    def __init__(self, fail_at: int, calls: list[str]) -> None:
        super().__init__()
        self.writes = 0
        self.fail_at = fail_at
        self.calls = calls
        self.calls_at_failure: int | None = None

    async def write(self, ops: Sequence[Op]) -> None:
        self.writes += 1
        if self.writes >= self.fail_at:
            if self.calls_at_failure is None:
                self.calls_at_failure = len(self.calls)
            raise OSError("disk full")
        await super().write(ops)


def test_a_failing_store_fails_the_run_stops_spending_and_closes_cleanly() -> None:
    gated = Gated()
    gated.answer = "ok"
    store = FailingStore(fail_at=3, calls=gated.calls)

    async def slow(req: Request) -> str:
        await asyncio.sleep(0.005)
        return await gated(req)

    async def main() -> None:
        async with Engine(providers=CallableProvider(slow), store=store, concurrency=4) as engine:
            run = engine.submit([Task(f"q{i}") for i in range(40)])
            with pytest.raises(FanoutError, match="store failed"):
                await asyncio.wait_for(run.wait(), 10)
            assert run.status == "failed"
            await asyncio.sleep(0.05)  # time enough for more calls, if any were made
            with pytest.raises(FanoutError, match="store failed"):
                engine.submit([Task("more")])

    arun(lambda: asyncio.wait_for(main(), 20))  # closing must not hang either
    assert store.calls_at_failure is not None
    assert len(gated.calls) == store.calls_at_failure  # nothing new was sent


@pytest.mark.parametrize("on", [TaskStarted, TaskFinished, RunFinished])
def test_a_listener_that_raises_is_noted_and_stops_nothing(on: type[Event]) -> None:
    def broken(ev: Event) -> None:
        if isinstance(ev, on):
            raise ValueError("a bug in a progress display")

    async def main() -> None:
        async with Engine(providers=Gated().provider(), concurrency=2) as engine:
            run = engine.submit([Task(f"q{i}") for i in range(30)])
            run.listen(broken)
            m = await asyncio.wait_for(run.wait(), 10)
            assert (m["done"], m["attempts"]) == (30, 30)  # the metrics listener still ran
            errors = m["callback_errors"]
            assert 1 <= len(errors) <= 10  # noted, and bounded
            assert "a bug in a progress display" in errors[0]
            again = await engine.run([Task("next run")])  # the engine is unharmed
            assert again.status == "done"

    arun(main)
