"""Timeouts (per attempt, stream idle, whole run) and cancellation (run, task, engine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fanout import (
    CallableProvider,
    Completion,
    Engine,
    Request,
    RetryPolicy,
    RunFinished,
    SimConfig,
    SimProvider,
    Task,
    TaskSlow,
    TaskStarted,
    TaskState,
)
from fanout.errors import RateLimited
from fanout.providers.base import Chunk

from .support import Gated, GatedStore, Recorder, arun, until

FAST = RetryPolicy(attempts=2, backoff_base_s=0.001)
CANCELLED = TaskState.CANCELLED


def test_a_per_attempt_timeout_is_retried_then_fails_as_timeout() -> None:
    gated = Gated(["hang"])  # never opened
    rec = Recorder()

    async def main() -> None:
        async with Engine(providers=gated.provider(), retry=FAST) as engine:
            run = engine.submit([Task("hang", key="hang", timeout=0.05), Task("ok", key="ok")])
            run.listen(rec)
            await run.wait()
            r = run.result("hang")
            assert r is not None
            assert r.state is TaskState.FAILED
            assert r.error is not None
            assert r.error.kind == "timeout"
            assert r.attempts == 2
            assert "within 0.05s" in r.error.message
            assert run.result("ok").ok  # type: ignore[union-attr]
            assert run.metrics()["failures_by_kind"] == {"timeout": 1}

    arun(main)
    assert gated.calls.count("hang") == 2
    assert gated.cancelled == ["hang", "hang"]  # the call itself was aborted, twice
    assert [e.error.kind for e in rec.retried()] == ["timeout"]


def test_the_engine_default_timeout_applies_and_a_task_may_override_it() -> None:
    gated = Gated(["slow"])

    async def main() -> None:
        async with Engine(
            providers=gated.provider(), timeout=0.05, retry=RetryPolicy(attempts=1)
        ) as engine:
            run = engine.submit([Task("slow", key="a"), Task("slow", key="b", timeout=30.0)])
            await until(lambda: run.result("a") is not None)
            assert run.result("b") is None  # still waiting: its own timeout is 30 s
            gated.open("slow")
            await run.wait()
            assert run.result("a").error.kind == "timeout"  # type: ignore[union-attr]
            assert run.result("b").ok  # type: ignore[union-attr]

    arun(main)


def test_a_stalled_stream_hits_the_idle_timeout() -> None:
    """The sim's injected timeout sends one chunk, then hangs."""
    sim = SimProvider(
        SimConfig(base_latency_s=0.001, jitter=0.0, faults={"timeout": 1.0}, hang_s=60.0)
    )

    async def main() -> None:
        async with Engine(providers=sim, idle_timeout=0.05, timeout=None, retry=FAST) as engine:
            run = await engine.run([Task("explain streams", key="s")])
            r = run.result("s")
            assert r is not None
            assert r.state is TaskState.FAILED
            assert r.attempts == 2
            assert r.error is not None
            assert r.error.kind == "timeout"
            assert "no data for 0.05s" in r.error.message

    arun(main)
    assert sim.stats()["requests_total"] == 2
    assert sim.stats()["completed_total"] == 0


class Trickle:
    """A streaming provider: `chunks` chunks `gap` seconds apart (or a stall after one)."""

    name = "trickle"
    streams = True

    def __init__(self, chunks: int, gap: float) -> None:
        self.chunks, self.gap = chunks, gap
        self.closed = 0

    def limiter_key(self, model: str) -> str:
        return f"trickle:{model}"

    def body(self, request: Request) -> dict[str, object]:
        return {"messages": request.messages}

    async def complete(self, request: Request) -> Completion:
        raise AssertionError("with an idle timeout the engine must stream")

    async def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        try:
            for i in range(self.chunks):
                await asyncio.sleep(self.gap)
                yield Chunk(f"c{i} ")
            yield Completion(text="".join(f"c{i} " for i in range(self.chunks)), model="m")
        finally:
            self.closed += 1

    async def aclose(self) -> None:
        return None


def test_the_idle_timeout_is_per_chunk_not_per_call() -> None:
    # 40 chunks 30 ms apart: 1.2 s in all, more than the 1 s idle timeout, and each gap a
    # thirtieth of it (a loaded machine may hold this process back a tenth of a second)
    provider = Trickle(chunks=40, gap=0.03)

    async def main() -> None:
        async with Engine(providers=provider, idle_timeout=1.0, timeout=None) as engine:
            run = await engine.run([Task("go", key="go")])
            r = run.result("go")
            assert r is not None
            assert r.ok
            assert (r.text or "").count("c") == 40

    arun(main)


def test_the_whole_run_deadline_cancels_what_is_left() -> None:
    gated = Gated(["hang"])
    rec = Recorder()

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=2) as engine:
            tasks = [Task("quick", key="quick", priority="urgent")]
            tasks += [Task("hang", key=f"h{i}") for i in range(5)]
            # the deadline must come after "quick" is done, however loaded the machine:
            # a margin of seconds, the test waits it out once
            run = engine.submit(tasks, deadline_s=1.5)
            run.listen(rec)
            await asyncio.wait_for(run.wait(), 10)
            assert run.status == "cancelled"
            assert "deadline" in run.metrics()["cancel_reason"]
            states = {t.key: t.state for t in run.tasks}
            assert states.pop("quick") is TaskState.DONE
            assert set(states.values()) == {CANCELLED}

    arun(main)
    # the slot freed by "quick" took one hanging task; four never started
    assert gated.calls == ["quick", "hang", "hang"]
    assert gated.cancelled == ["hang", "hang"]
    assert len(rec.finished()) == 6


def test_cancelling_a_run_aborts_calls_in_flight_and_starts_nothing_new() -> None:
    gated = Gated(["t"])
    rec = Recorder()

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=2) as engine:
            run = engine.submit([Task("t", key=f"t{i}") for i in range(6)])
            run.listen(rec)
            await until(lambda: gated.inflight == 2)
            run.cancel("changed my mind")
            await asyncio.wait_for(run.wait(), 10)
            assert run.status == "cancelled"
            assert all(t.state is CANCELLED for t in run.tasks)
            for t in run.tasks:
                r = run.result(t)
                assert r is not None
                assert r.error is not None
                assert (r.error.kind, r.error.message) == ("cancelled", "changed my mind")
            m = run.metrics()
            assert (m["cancelled"], m["running"], m["attempts"]) == (6, 0, 2)
            run.cancel()  # a second cancel is harmless

    arun(main)
    assert gated.calls == ["t", "t"]
    assert gated.cancelled == ["t", "t"]
    assert gated.inflight == 0
    finished = rec.finished()
    assert len(finished) == 6
    assert {e.state for e in finished.values()} == {CANCELLED}
    assert isinstance(rec.events[-1], RunFinished)
    assert rec.events[-1].status == "cancelled"


def test_cancelling_one_task_leaves_the_others_alone() -> None:
    gated = Gated(["a", "b", "c", "queued"])

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=3) as engine:
            run = engine.submit(
                [
                    Task("a", key="a"),
                    Task("b", key="b"),
                    Task("c", key="c"),
                    Task("queued", key="queued"),
                ]
            )
            await until(lambda: gated.inflight == 3)
            assert run.cancel_task("b", "not needed") is True
            assert run.cancel_task(f"{run.id}-3") is True  # by id: never started
            await until(lambda: run.result("b") is not None)
            assert run.cancel_task("b") is False  # already over
            gated.open("a")
            gated.open("c")
            await run.wait()
            states = {t.key: t.state for t in run.tasks}
            assert states == {
                "a": TaskState.DONE,
                "b": CANCELLED,
                "c": TaskState.DONE,
                "queued": CANCELLED,
            }
            assert run.cancel_task("a") is False

    arun(main)
    assert sorted(gated.calls) == ["a", "b", "c"]
    assert gated.cancelled == ["b"]


def test_a_task_waiting_for_its_retry_is_cancelled_without_waiting_it_out() -> None:
    calls: list[int] = []

    async def limited(req: Request) -> str:
        calls.append(req.attempt)
        raise RateLimited("slow down", status=429, retry_after=60.0)

    async def main() -> None:
        async with Engine(providers=CallableProvider(limited)) as engine:
            run = engine.submit([Task("x", key="x")])
            await until(lambda: run.retries == 1)
            run.cancel()
            await asyncio.wait_for(run.wait(), 10)
            assert run.tasks[0].state is CANCELLED

    arun(main)
    assert calls == [1]


def test_closing_the_engine_cancels_running_calls_and_does_not_hang() -> None:
    gated = Gated(["hang"])

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=2) as engine:
            run = engine.submit([Task("hang", key=f"h{i}") for i in range(3)])
            await until(lambda: gated.inflight == 2)
        assert run.status == "cancelled"
        assert [t.state for t in run.tasks] == [CANCELLED] * 3
        await asyncio.wait_for(run.wait(), 5)

    arun(lambda: asyncio.wait_for(main(), 20))
    assert gated.cancelled == ["hang", "hang"]


def test_a_task_added_by_then_after_the_run_was_cancelled_never_starts() -> None:
    """A's result is recorded but not yet durable when the run is cancelled: its `then`
    still fires once durable, and what it adds must not run."""
    gated = Gated()

    async def main() -> None:
        store = GatedStore()
        async with Engine(providers=gated.provider(), store=store) as engine:
            store.gate.clear()
            run = engine.submit([Task("A", key="A", then=lambda r: [Task("B", key="B")])])
            await until(lambda: "A" in gated.calls and gated.inflight == 0)
            run.cancel()
            store.gate.set()
            await asyncio.wait_for(run.wait(), 10)
            assert {t.key: t.state for t in run.tasks} == {"A": TaskState.DONE, "B": CANCELLED}
            assert run.status == "cancelled"

    arun(main)
    assert gated.calls == ["A"]


def test_a_listener_may_cancel_the_run_when_a_task_starts() -> None:
    gated = Gated(["t"])

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=1) as engine:
            run = engine.submit([Task("t", key=f"t{i}") for i in range(3)])

            def stop_at_first_start(ev: object) -> None:
                if isinstance(ev, TaskStarted):
                    run.cancel("stop")

            run.listen(stop_at_first_start)
            await asyncio.wait_for(run.wait(), 10)
            assert [t.state for t in run.tasks] == [CANCELLED] * 3

    arun(main)
    assert gated.calls == []  # the attempt was cancelled before its call


def test_slow_tasks_are_reported_once() -> None:
    gated = Gated(["slow"])
    rec = Recorder()

    async def main() -> None:
        # "fast" answers at once: it must stay under the threshold even on a loaded machine
        async with Engine(providers=gated.provider(), slow_after_s=0.5) as engine:
            run = engine.submit([Task("slow", key="slow"), Task("fast", key="fast")])
            run.listen(rec)
            await until(lambda: bool(rec.of(TaskSlow)), within=10)
            gated.open("slow")
            await run.wait()
            assert run.metrics()["slow"] == 1

    arun(main)
    slow = rec.of(TaskSlow)
    assert [e.task.key for e in slow] == ["slow"]
    assert slow[0].elapsed > 0.5
    assert len(rec.finished()) == 2
