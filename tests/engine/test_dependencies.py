"""Dependencies: outputs flow into prompts, conditions, dynamic fan-out, plan errors, and
the layered fan-in of the spec (55 -> 12 -> 4 -> 1) with a failed partition."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

import pytest

from fanout import (
    CallableProvider,
    Engine,
    PlanError,
    Request,
    Result,
    Task,
    TaskState,
)
from fanout.errors import BadRequest

from .support import Recorder, arun


def echo_provider(calls: list[str], fail: set[str] | None = None) -> CallableProvider:
    """Answers with its prompt; prompts in `fail` get a 400."""

    async def echo(req: Request) -> str:
        text = req.prompt_text()
        calls.append(text)
        if fail and text in fail:
            raise BadRequest(f"refused {text}", status=400)
        return text

    return CallableProvider(echo, name="echo")


def test_dependency_outputs_reach_the_dependents_prompt() -> None:
    calls: list[str] = []
    seen: dict[str, Result] = {}

    def summarise(deps: Mapping[str, Result]) -> str:
        seen.update(deps)
        return "summary of " + " + ".join(deps[k].text or "" for k in ("a", "b"))

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            a = Task("alpha", key="a")
            run = await engine.run(
                [Task(summarise, key="s", depends_on=[a, "b"]), a, Task("beta", key="b")]
            )
            assert run.result("s").text == "summary of alpha + beta"  # type: ignore[union-attr]
            assert run.status == "done"

    arun(main)
    assert set(seen) == {"a", "b"}
    assert all(r.ok for r in seen.values())
    assert calls.index("summary of alpha + beta") == 2


def test_a_false_condition_skips_as_not_selected_not_failed() -> None:
    calls: list[str] = []

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            score = Task("score 3", key="score")
            run = await engine.run(
                [
                    score,
                    Task(
                        "deep",
                        key="deep",
                        depends_on=[score],
                        when=lambda d: int((d["score"].text or "0").split()[-1]) >= 5,
                    ),
                    Task(
                        "basic",
                        key="basic",
                        depends_on=[score],
                        when=lambda d: int((d["score"].text or "0").split()[-1]) < 5,
                    ),
                ]
            )
            deep = run.result("deep")
            assert deep is not None
            assert deep.state is TaskState.SKIPPED
            assert deep.error is not None
            assert (deep.error.error_class, deep.error.kind) == ("dependency", "not_selected")
            assert run.result("basic").state is TaskState.DONE  # type: ignore[union-attr]
            m = run.metrics()
            assert (m["done"], m["skipped"], m["failed"]) == (2, 1, 0)
            assert m["failures_by_kind"] == {}
            assert run.status == "done"

    arun(main)
    assert calls == ["score 3", "basic"]


def test_a_condition_that_raises_fails_only_its_task() -> None:
    calls: list[str] = []

    def broken(deps: Mapping[str, Result]) -> bool:
        raise ValueError("bad condition")

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            run = await engine.run(
                [Task("a", key="a"), Task("b", key="b", depends_on=["a"], when=broken)]
            )
            b = run.result("b")
            assert b is not None
            assert b.state is TaskState.FAILED
            assert b.error is not None
            assert b.error.kind == "condition_error"
            assert run.result("a").ok  # type: ignore[union-attr]

    arun(main)
    assert calls == ["a"]


def test_then_adds_the_agents_a_score_selects() -> None:
    calls: list[str] = []
    agents = {"low": ["basic", "example"], "high": ["deep", "comparison", "memory"]}

    def prompt_for(agent: str) -> Callable[[Mapping[str, Result]], str]:
        return lambda deps: f"{agent} given {deps['score'].text}"

    def follow(r: Result) -> list[Task]:
        score = int(re.findall(r"\d+", r.text or "")[0])
        chosen = agents["high" if score >= 7 else "low"]
        return [Task(prompt_for(a), key=a, agent=a, depends_on=["score"]) for a in chosen]

    async def main() -> None:
        rec = Recorder()
        async with Engine(providers=echo_provider(calls)) as engine:
            run = engine.submit([Task("score 8", key="score", then=follow)])
            run.listen(rec)
            await run.wait()
            assert [t.key for t in run.tasks] == ["score", "deep", "comparison", "memory"]
            assert all(t.state is TaskState.DONE for t in run.tasks)
            assert run.metrics()["total"] == 4
            assert len(rec.finished()) == 4
            assert run.status == "done"

    arun(main)
    assert calls[0] == "score 8"
    assert sorted(calls[1:]) == sorted(f"{a} given score 8" for a in agents["high"])


def test_then_that_raises_is_recorded_and_the_run_goes_on() -> None:
    calls: list[str] = []

    def boom(r: Result) -> list[Task]:
        raise RuntimeError("cannot decide")

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            run = await engine.run([Task("a", key="a", then=boom), Task("b", key="b")])
            assert [t.state for t in run.tasks] == [TaskState.DONE, TaskState.DONE]
            assert any("cannot decide" in e for e in run.metrics()["callback_errors"])

    arun(main)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(
            lambda: [
                Task("a", key="a", depends_on=["c"]),
                Task("b", key="b", depends_on=["a"]),
                Task("c", key="c", depends_on=["b"]),
            ],
            id="cycle",
        ),
        pytest.param(lambda: [Task("a", key="a", depends_on=["a"])], id="self"),
        pytest.param(lambda: [Task("a", key="a", depends_on=["nope"])], id="unknown"),
        pytest.param(lambda: [Task("a", key="a"), Task("b", key="a")], id="duplicate"),
        pytest.param(
            lambda: [
                Task("x", key="x"),
                Task("ok", key="ok"),
                Task("z", key="z", depends_on=["z"]),
            ],
            id="self-among-good",
        ),
    ],
)
def test_bad_plans_are_refused_before_anything_runs(make: Callable[[], list[Task]]) -> None:
    calls: list[str] = []

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            with pytest.raises(PlanError):
                engine.submit(make())
            assert engine.runs == []
            run = await engine.run([Task("after", key="after")])  # the engine is still usable
            assert run.status == "done"

    arun(main)
    assert calls == ["after"]


def test_a_cycle_message_names_the_tasks() -> None:
    async def main() -> None:
        async with Engine(providers=echo_provider([])) as engine:
            a = Task("a", key="a")
            b = Task("b", key="b", depends_on=[a])
            a.depends_on = (b,)
            with pytest.raises(PlanError, match="cycle") as info:
                engine.submit([a, b])
            assert "'a'" in str(info.value)
            assert "'b'" in str(info.value)

    arun(main)


def test_added_tasks_are_checked_too() -> None:
    calls: list[str] = []

    async def main() -> None:
        gate_calls: list[str] = []
        async with Engine(providers=echo_provider(gate_calls)) as engine:
            run = engine.submit([Task("a", key="a")])
            with pytest.raises(PlanError):
                run.add([Task("dup", key="a")])
            with pytest.raises(PlanError):
                run.add([Task("x", key="x", depends_on=["missing"])])
            run.add([Task("b", key="b", depends_on=["a"])])
            await run.wait()
            assert [t.state for t in run.tasks] == [TaskState.DONE, TaskState.DONE]
            calls.extend(gate_calls)

    arun(main)
    assert calls == ["a", "b"]


def test_skip_names_the_failed_dependency_and_skips_transitively() -> None:
    calls: list[str] = []

    async def main() -> None:
        async with Engine(providers=echo_provider(calls, fail={"bad"})) as engine:
            run = await engine.run(
                [
                    Task("bad", key="bad"),
                    Task("mid", key="mid", depends_on=["bad"]),
                    Task("leaf", key="leaf", depends_on=["mid"]),
                    Task("agg", key="agg", depends_on=["leaf"], on_dependency_failure="run"),
                ]
            )
            states = {t.key: t.state for t in run.tasks}
            assert states == {
                "bad": TaskState.FAILED,
                "mid": TaskState.SKIPPED,
                "leaf": TaskState.SKIPPED,
                "agg": TaskState.DONE,
            }
            mid = run.result("mid")
            assert mid is not None
            assert mid.error is not None
            assert mid.error.kind == "dependency_failed"
            assert "bad" in mid.error.message
            assert run.status == "failed"

    arun(main)
    assert calls == ["bad", "agg"]


def test_layered_fan_in_55_12_4_1_goes_on_with_54_partitions() -> None:
    calls: list[str] = []
    seen_by_layer2: list[Mapping[str, Result]] = []

    def aggregate(deps: Mapping[str, Result]) -> str:
        return "\n".join(r.text or "" for r in deps.values() if r.ok)

    def aggregate2(deps: Mapping[str, Result]) -> str:
        seen_by_layer2.append(dict(deps))
        return aggregate(deps)

    def chunks(items: list[Task], n: int) -> list[list[Task]]:
        k, extra = divmod(len(items), n)
        out, i = [], 0
        for j in range(n):
            size = k + (1 if j < extra else 0)
            out.append(items[i : i + size])
            i += size
        return out

    layer1 = [Task(f"P{i:02d}", key=f"p{i}") for i in range(55)]
    layer2 = [
        Task(aggregate2, key=f"a2-{j}", depends_on=c, on_dependency_failure="run")
        for j, c in enumerate(chunks(layer1, 12))
    ]
    layer3 = [
        Task(aggregate, key=f"a3-{j}", depends_on=c, on_dependency_failure="run")
        for j, c in enumerate(chunks(layer2, 4))
    ]
    final = Task(aggregate, key="final", depends_on=layer3, on_dependency_failure="run")

    async def main() -> None:
        rec = Recorder()
        async with Engine(providers=echo_provider(calls, fail={"P17"}), concurrency=8) as engine:
            run = engine.submit([final, *layer3, *layer2, *layer1])
            run.listen(rec)
            await run.wait()
            r = run.result("final")
            assert r is not None
            assert r.ok
            parts = (r.text or "").split("\n")
            assert len(parts) == 54
            assert "P17" not in parts
            assert sorted(parts) == sorted(f"P{i:02d}" for i in range(55) if i != 17)
            m = run.metrics()
            assert (m["done"], m["failed"], m["skipped"]) == (71, 1, 0)
            # every aggregator started after all of its dependencies had finished
            order = [(type(e).__name__, e.task.key) for e in rec.events if hasattr(e, "task")]
            for t in [*layer2, *layer3, final]:
                start = order.index(("TaskStarted", t.key))
                for d in t.depends_on:
                    assert order.index(("TaskFinished", d.key)) < start  # type: ignore[union-attr]

    arun(main)
    assert len(calls) == 72
    assert len(seen_by_layer2) == 12
    with_failure = [d for d in seen_by_layer2 if "p17" in d]
    assert len(with_failure) == 1
    assert not with_failure[0]["p17"].ok  # the aggregator sees which partition failed
    assert sum(r.ok for d in seen_by_layer2 for r in d.values()) == 54


def test_a_callable_prompt_that_raises_fails_only_its_task() -> None:
    calls: list[str] = []

    def broken(deps: Mapping[str, Result]) -> str:
        raise KeyError("missing")

    async def main() -> None:
        async with Engine(providers=echo_provider(calls)) as engine:
            run = await engine.run([Task(broken, key="broken"), Task("fine", key="fine")])
            b = run.result("broken")
            assert b is not None
            assert b.state is TaskState.FAILED
            assert b.error is not None
            assert b.error.kind == "exception"
            assert b.attempts == 1
            assert run.result("fine").ok  # type: ignore[union-attr]

    arun(main)
    assert calls == ["fine"]
