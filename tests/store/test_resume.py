"""Resuming a stored run in a new engine: what runs again, what does not, and why."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from fanout import CallableProvider, ConfigError, Engine, FanoutError, Request, Result, Task
from fanout.agents import Blueprint, parse_blueprint
from fanout.engine.metrics import metrics_from_snapshot
from fanout.prompts import Placeholders
from fanout.store.base import RunBusy
from fanout.store.sqlite import SqliteStore
from tests.engine.support import Gated, arun, until

COMPARED = (
    "total",
    "done",
    "failed",
    "skipped",
    "cancelled",
    "wall_s",
    "serial_s",
    "speedup",
    "utilisation",
    "p50_s",
    "p95_s",
    "p50_by_agent",
    "p95_by_agent",
    "attempts",
    "retries",
    "retries_by_kind",
    "failures_by_kind",
    "input_tokens",
    "output_tokens",
    "cached",
    "interrupted",
)


class Calls:
    """A provider function that counts calls by prompt (first line) and can fail some."""

    def __init__(self, fail: Mapping[str, int] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = dict(fail or {})

    async def __call__(self, req: Request) -> str:
        name = req.prompt_text().split("\n", 1)[0]
        self.calls.append(name)
        await asyncio.sleep(0.001)
        if self.fail.get(name, 0) > 0:
            self.fail[name] -= 1
            from fanout.errors import ServerError

            raise ServerError("boom", status=500)
        return f"answer to {name}."

    def provider(self) -> CallableProvider:
        return CallableProvider(self, name="py")


async def interrupted_run(
    path: Path, tasks: list[Task], gated: Sequence[str], finished: int | None = None
) -> tuple[str, Gated]:
    """Run `tasks` until `finished` (default: all but the gated) have finished and the gated
    ones are running, then stop those (an interrupt with no grace): the store holds a run
    with some tasks done, some not."""
    gate = Gated(gated)
    async with Engine(providers=gate.provider("py"), store=SqliteStore(path), concurrency=4) as e:
        run = e.submit(tasks)
        for name in gated:
            await gate.wait_started(name)
        want = len(tasks) - len(gated) if finished is None else finished
        await until(lambda: run.finished >= want)
        run.interrupt(0)
        await run.wait()
        assert run.status == "interrupted"
    return run.id, gate


def test_a_resume_runs_only_what_had_not_finished_and_counts_attempts_on(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(10)]

    async def main() -> None:
        run_id, gate = await interrupted_run(path, tasks, ["t7", "t8", "t9"])
        assert sorted(gate.cancelled) == ["t7", "t8", "t9"]  # the calls in flight were stopped
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            run = await e.resume(run_id)  # tasks rebuilt from the store
            m = await run.wait()
            assert sorted(calls.calls) == ["t7", "t8", "t9"]
            results = await run.results()
            assert [r.key for r in results] == [f"k{i}" for i in range(10)]
            assert all(r.ok for r in results)
            assert [r.attempts for r in results] == [1] * 7 + [2] * 3  # attempt 1 interrupted
            assert m["interrupted"] == 3
            assert m["attempts"] == 13
            assert run.status == "done"

    arun(main)


def test_dependents_see_loaded_results_and_placeholders_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    a = Task("first", key="a")
    b = Task("second", key="b")
    c = Task(Placeholders("third uses {{a}}"), key="c", depends_on=["a", "b"])

    async def main() -> None:
        run_id, _ = await interrupted_run(path, [a, b, c], ["second"], finished=1)
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            run = await e.resume(run_id)
            await run.wait()
        assert calls.calls == ["second", "third uses answer to first"]

    arun(main)


def test_python_tasks_with_callables_resume_when_given_again(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    def make() -> list[Task]:
        head = Task("head", key="head")
        return [
            head,
            Task(lambda deps: f"tail after {deps['head'].text}", key="tail", depends_on=[head]),
            Task("other", key="other"),
        ]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, make(), ["head"], finished=1)
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            with pytest.raises(FanoutError, match="resume it from Python with the same tasks"):
                await e.resume(run_id)
            run = await e.resume(run_id, make())
            await run.wait()
        assert calls.calls == ["head", "tail after answer to head."]  # "other" had finished

    arun(main)


def test_a_crashed_runs_lease_is_stale_once_its_process_is_gone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(6)]

    async def main() -> None:
        gate = Gated(["t5"])
        first = Engine(providers=gate.provider("py"), store=SqliteStore(path), concurrency=2)
        await first.start()
        run = first.submit(tasks)
        await gate.wait_started("t5")
        await until(lambda: run.finished == 5)
        await asyncio.sleep(0.05)  # the results' batch is committed
        other = Engine(providers=Calls().provider(), store=SqliteStore(path))
        async with other:
            with pytest.raises(RunBusy, match=f"run {run.id} is being run by process"):
                await other.resume(run.id)
        # a crash: the process is gone and its lease names a dead pid (kill -9 closes nothing)
        proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await proc.wait()
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE runs SET lease_pid = ? WHERE id = ?", (proc.pid, run.id))
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            resumed = await e.resume(run.id)
            m = await resumed.wait()
        assert calls.calls == ["t5"]
        assert m["done"] == 6
        gate.open("t5")
        await first.aclose()

    arun(main)


def test_two_engines_cannot_resume_one_run_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(4)]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, tasks, ["t3"])
        gate = Gated(["t3"])
        async with (
            Engine(providers=gate.provider("py"), store=SqliteStore(path)) as a,
            Engine(providers=Calls().provider(), store=SqliteStore(path)) as b,
        ):
            outcomes = await asyncio.gather(
                a.resume(run_id), b.resume(run_id), return_exceptions=True
            )
            busy = [o for o in outcomes if isinstance(o, RunBusy)]
            runs = [o for o in outcomes if not isinstance(o, BaseException)]
            assert len(busy) == 1, outcomes  # what each resume gave, when it fails
            assert len(runs) == 1, outcomes
            gate.open("t3")
            await runs[0].wait()

    arun(main)


def test_a_changed_model_fails_the_resume_unless_reconfigure(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(3)] + [
        Task("pinned", key="pinned", model="m-pinned"),
        Task("late", key="late"),
    ]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, tasks, ["late"])
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path), model="m2") as e:
            with pytest.raises(ConfigError) as err:
                await e.resume(run_id)
            msg = str(err.value)
            assert "default model: sim-1 -> m2" in msg
            assert "3 finished task(s) would now send a different request" in msg
            assert "--reconfigure" in msg
            run = await e.resume(run_id, reconfigure=True)
            await run.wait()
        assert sorted(calls.calls) == ["late", "t0", "t1", "t2"]  # not "pinned"
        assert {r.model for r in await_results(path, run_id)} >= {"m2"}

    arun(main)


def await_results(path: Path, run_id: str) -> list[Result]:
    from fanout.store import queries

    with contextlib.closing(sqlite3.connect(path)) as db:
        return queries.load_results(db, run_id)


def _bp(body: str) -> Blueprint:
    return parse_blueprint(f"---\nname: explainer\ninputs: [topic]\n---\n{body}")


def test_a_changed_blueprint_reruns_its_tasks_and_their_dependents(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    v1, v2 = _bp("Explain {topic}."), _bp("Explain {topic} simply.")
    assert v1.version != v2.version

    def make(bp: Blueprint) -> list[Task]:
        return [
            bp.task({"topic": "sets"}, key="sets"),
            Task("plain", key="plain"),
            Task(Placeholders("sum of {{sets}}"), key="sum", depends_on=["sets"]),
            Task("late", key="late"),
        ]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, make(v1), ["late"])
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            with pytest.raises(ConfigError, match="blueprint 'explainer': version"):
                await e.resume(run_id, blueprints={"explainer": v2})
            run = await e.resume(run_id, blueprints={"explainer": v2}, reconfigure=True)
            await run.wait()
        assert sorted(calls.calls) == [
            "Explain sets simply.",
            "late",
            "sum of answer to Explain sets simply..",
        ]

    arun(main)


def test_metrics_from_the_store_agree_with_run_metrics(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        calls = Calls(fail={"t1": 1, "t2": 9})
        tasks = [Task(f"t{i}", key=f"k{i}", agent=f"a{i % 2}", attempts=3) for i in range(8)]
        tasks.append(Task("t8", key="k8", depends_on=["k2"]))
        async with Engine(providers=calls.provider(), store=SqliteStore(path)) as e:
            run = e.submit(tasks)
            live = await run.wait()
        snap = await SqliteStore(path).snapshot(run.id)
        assert snap is not None
        stored = metrics_from_snapshot(snap)
        assert (live["retries"], live["failed"], live["skipped"]) == (3, 1, 1)
        assert {k: stored[k] for k in COMPARED} == {k: live[k] for k in COMPARED}

    arun(main)


def test_a_resumed_runs_metrics_cover_every_segment_and_agree(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}", agent="a") for i in range(6)]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, tasks, ["t4", "t5"])
        async with Engine(providers=Calls().provider(), store=SqliteStore(path)) as e:
            run = await e.resume(run_id)
            live = await run.wait()
        store = SqliteStore(path)
        snap = await store.snapshot(run_id)
        await store.close()
        assert snap is not None
        assert len(snap.segments) == 2
        stored = metrics_from_snapshot(snap)
        assert (live["done"], live["interrupted"], live["attempts"]) == (6, 2, 8)
        assert live["wall_s"] > snap.segments[1].wall  # both segments count
        assert {k: stored[k] for k in COMPARED} == {k: live[k] for k in COMPARED}

    arun(main)


def test_resume_needs_a_store_that_keeps_runs(tmp_path: Path) -> None:
    async def main() -> None:
        async with Engine() as e:
            with pytest.raises(ConfigError, match="SqliteStore"):
                await e.resume("r-nope")
        async with Engine(store=SqliteStore(tmp_path / "s.db")) as e:
            with pytest.raises(FanoutError, match="no run 'r-nope'"):
                await e.resume("r-nope")

    arun(main)


def test_a_resumed_run_keeps_its_deadline(tmp_path: Path) -> None:
    """`deadline_s` bounds a resumed segment as it bounds a new run: what has not finished
    by then is cancelled, calls in flight included."""
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(4)]

    async def main() -> None:
        run_id, _ = await interrupted_run(path, tasks, ["t3"])
        stuck = Gated(["t3"])  # the resumed call never answers
        async with Engine(providers=stuck.provider("py"), store=SqliteStore(path)) as e:
            run = await e.resume(run_id, deadline_s=0.2)
            await stuck.wait_started("t3")
            m = await run.wait()
            assert run.status == "cancelled"
            assert "deadline" in (run.cancel_reason or "")
            assert (m["done"], m["cancelled"]) == (3, 1)
            assert stuck.cancelled == ["t3"]
            with pytest.raises(ConfigError, match="deadline_s"):
                await e.resume(run_id, deadline_s=0)

    arun(main)


def test_retry_failed_runs_exactly_the_failed_tasks_again_with_fresh_attempts(
    tmp_path: Path,
) -> None:
    """A finished run with failures: `retry_failed` re-runs those (all of them, or only the
    ones whose error class or kind is named), nothing else, each with its full attempts."""
    from fanout import RetryPolicy
    from fanout.errors import BadRequest, ServerError

    path = tmp_path / "s.db"
    broken = {"t2": ServerError("p: 500", status=500), "t5": BadRequest("p: 400", status=400)}

    async def first(req: Request) -> str:
        name = req.prompt_text()
        if name in broken:
            raise broken[name]
        return f"answer to {name}"

    async def main() -> None:
        policy = RetryPolicy(attempts=2, backoff_base_s=0.001)
        tasks = [Task(f"t{i}", key=f"k{i}") for i in range(8)]
        async with Engine(
            providers=CallableProvider(first, name="py"), store=SqliteStore(path), retry=policy
        ) as e:
            run = await e.run(tasks)
            assert run.status == "failed"
            run_id = run.id
        calls = Calls()
        async with Engine(providers=calls.provider(), store=SqliteStore(path), retry=policy) as e:
            run = await e.resume(run_id, retry_failed={"transient"})  # the 500, not the 400
            m = await run.wait()
            assert calls.calls == ["t2"]
            assert (m["done"], m["failed"]) == (7, 1)
            results = {r.key: r for r in await run.results()}
            assert results["k2"].ok
            assert results["k2"].attempts == 3
        calls2 = Calls(fail={"t5": 1})
        async with Engine(providers=calls2.provider(), store=SqliteStore(path), retry=policy) as e:
            run = await e.resume(run_id, retry_failed=True)
            m = await run.wait()
            # t5 fails once more and still succeeds: its two attempts were begun anew
            assert calls2.calls == ["t5", "t5"]
            assert (m["done"], m["failed"], run.status) == (8, 0, "done")
        async with Engine(providers=Calls().provider(), store=SqliteStore(path)) as e:
            run = await e.resume(run_id, retry_failed=True)  # nothing failed: nothing to do
            await run.wait()
            assert run.status == "done"

    arun(main)
