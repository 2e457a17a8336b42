"""Tasks and runs as data: keys, ids, priorities, validation, and what submit refuses."""

from __future__ import annotations

import pytest

from fanout import (
    ConfigError,
    Engine,
    FanoutError,
    PlanError,
    Priority,
    Task,
    TaskState,
)

from .support import Gated, arun


def test_keys_are_stable_and_derived_from_partition_agent_inputs_and_sample() -> None:
    def key(**kw: object) -> str:
        return Task("prompt", **kw).key  # type: ignore[arg-type]

    base = {"partition": "node-1", "agent": "oral", "inputs": {"topic": "sets"}}
    assert key(**base) == key(**base)
    assert key(**base).startswith("k-")
    assert key(**base) != key(**{**base, "sample": 1})
    assert key(**base) != key(**{**base, "agent": "memory"})
    assert key(**base) != key(**{**base, "partition": "node-2"})
    assert key(**base) != key(**{**base, "inputs": {"topic": "maps"}})
    assert Task("a").key == Task("a").key != Task("b").key  # no inputs: the prompt counts
    assert Task("x", key="given").key == "given"


def test_priority_parsing() -> None:
    assert Priority.parse("urgent") is Priority.URGENT
    assert Priority.parse(" Low ") is Priority.LOW
    assert Priority.parse(2) is Priority.HIGH
    assert Priority.URGENT > Priority.HIGH > Priority.NORMAL > Priority.LOW
    with pytest.raises(ValueError, match="unknown priority"):
        Priority.parse("asap")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": None}, "needs a prompt"),
        ({"on_dependency_failure": "maybe"}, "on_dependency_failure"),
        ({"output": "xml"}, "output"),
        ({"attempts": 0}, "attempts"),
    ],
)
def test_bad_tasks_are_refused_with_a_reason(kwargs: dict[str, object], match: str) -> None:
    kw = {"prompt": "p", **kwargs}
    with pytest.raises(ValueError, match=match):
        Task(**kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"order": "random"}, "order"),
        ({"timeout": 0}, "timeout"),
        ({"idle_timeout": -1}, "idle_timeout"),
        ({"aging_s": 0}, "aging_s"),
        ({"lanes": {"x": 0}}, "lane 'x'"),
        ({"provider": "nope"}, "not configured"),
    ],
)
def test_bad_engine_settings_are_config_errors(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Engine(**kwargs)  # type: ignore[arg-type]


def test_ids_are_run_and_number_and_states_are_terminal_at_the_end() -> None:
    async def main() -> None:
        async with Engine(providers=Gated().provider()) as engine:
            tasks = [Task(f"q{i}") for i in range(3)]
            assert tasks[0].id == "(unsubmitted)"
            assert tasks[0].n == -1
            run = engine.submit(tasks, run_id="r-test")
            assert [t.id for t in tasks] == ["r-test-0", "r-test-1", "r-test-2"]
            assert run.find("r-test-2") is tasks[2]
            assert run.find(tasks[1].key) is tasks[1]
            with pytest.raises(KeyError):
                run.find("r-test-9")
            await run.wait()
            assert all(t.state.terminal for t in tasks)
            assert engine.get_run("r-test") is run
            with pytest.raises(FanoutError):
                engine.get_run("nope")

    arun(main)
    assert TaskState.DONE.terminal
    assert not TaskState.READY.terminal


def test_what_submit_refuses() -> None:
    async def main() -> None:
        async with Engine(providers=Gated().provider()) as engine:
            first = engine.submit([Task("a", key="a")], run_id="one")
            with pytest.raises(PlanError, match="already exists"):
                engine.submit([Task("b")], run_id="one")
            with pytest.raises(PlanError, match="already submitted"):
                engine.submit(list(first.tasks))
            foreign = first.tasks[0]
            with pytest.raises(PlanError, match="not in this run"):
                engine.submit([Task("c", depends_on=[foreign])])
            with pytest.raises(ConfigError, match="provider 'other'"):
                engine.submit([Task("d", provider="other")])
            with pytest.raises(ConfigError, match="deadline_s"):
                engine.submit([Task("e")], deadline_s=0)
            await first.wait()
            with pytest.raises(FanoutError, match="has finished"):
                first.add([Task("late")])
            empty = engine.submit([])
            await empty.wait()
            assert empty.status == "done"
        with pytest.raises(FanoutError, match="not running"):
            engine.submit([Task("after close")])

    arun(main)
