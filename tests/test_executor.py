"""`fanout.ParallelAgentExecutor`, the seed notes' API, against the sim-server over loopback
(the official openai SDK), loading the seed notes' `parallel_agents.yaml` unchanged."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import openai  # noqa: F401  (imported here, not inside the first timed call)
import pytest

import fanout
from fanout import ParallelAgentExecutor
from fanout.errors import ConfigError, FanoutError, InputError
from fanout.providers.sim import SimConfig
from fanout.sim_server import SimServer, start_server

SEED_YAML = Path(__file__).parent / "fixtures" / "seed" / "parallel_agents.yaml"
CANVAS = "笔记库/离散数学/离散数学.canvas"
T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await fn()

    return asyncio.run(main())


@asynccontextmanager
async def serving(latency_s: float) -> AsyncIterator[SimServer]:
    server = await start_server(SimConfig(base_latency_s=latency_s, per_token_s=0.0, jitter=0.0))
    try:
        yield server
    finally:
        await server.stop()


def executor(server: SimServer, tmp_path: Path, config: Path | None = SEED_YAML) -> Any:
    return ParallelAgentExecutor(
        config,
        provider="openai",
        base_url=server.url + "/v1",
        store_path=tmp_path / "runs.sqlite",
    )


def node_tasks(agent: str, n: int) -> list[dict[str, Any]]:
    """The original system's task dicts, Chinese material as its canvases hold."""
    return [
        {
            "agent_name": agent,
            "node_id": f"节点-{i}",
            "node_content": f"什么是逆否命题？第{i}题：若 p 则 q 的逆否命题是什么？",
            "canvas_path": CANVAS,
            "guidance": "请从定义开始思考",
        }
        for i in range(n)
    ]


async def until(condition: Callable[[], bool]) -> None:
    """Wait for a state (the test's timeout bounds it), never for a fixed time."""
    while True:
        if condition():
            return
        await asyncio.sleep(0.01)


class Peak:
    """The most calls the sim-server handled at once, sampled while `watch` runs."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.value = 0

    async def watch(self, until: Awaitable[Any]) -> Any:
        fut = asyncio.ensure_future(until)
        while not fut.done():
            self.value = max(self.value, int(self.server.stats()["in_flight"]))
            await asyncio.sleep(0.002)
        return fut.result()


def test_seed_yaml_limits_bound_calls_in_flight_and_configure_changes_them(
    tmp_path: Path,
) -> None:
    """The seed file's oral-explanation `max_concurrent: 6` (under a global 8) bounds its
    calls on the simulator; configure_parallel_settings lowers it to 3 for the next batch;
    the status words and aggregated results are the original's; the run is in the store."""

    async def main() -> None:
        async with serving(0.15) as server:
            ex = executor(server, tmp_path)
            assert ex.config.concurrency == 8
            eid = await ex.submit_batch_tasks(node_tasks("oral-explanation", 18))
            status = await ex.get_execution_status(eid)
            assert status["overall_status"] == "running"
            assert status["max_concurrent_agents"] == 8
            assert status["task_queue"]["total_tasks"] == 18
            assert {s["status"] for s in status["agent_execution_sessions"]} <= {
                "pending",
                "running",
            }
            peak = Peak(server)
            results = await peak.watch(ex.get_execution_results(eid))
            assert peak.value == 6  # the agent's limit: neither 8 (global) nor fewer

            assert results["overall_status"] == "completed"
            assert results["successful_tasks"] == 18
            rows = results["results"]
            assert [r["node_id"] for r in rows] == [f"节点-{i}" for i in range(18)]
            assert {r["status"] for r in rows} == {"completed"}
            assert all(r["canvas_path"] == CANVAS for r in rows)
            by_node = results["result_aggregation"]["by_node"]
            assert set(by_node) == {f"节点-{i}" for i in range(18)}
            assert by_node["节点-0"]["oral-explanation"] == rows[0]["content"]
            assert rows[0]["content"].strip()
            status = await ex.get_execution_status(eid)
            assert status["overall_status"] == "completed"
            assert status["task_queue"]["completed_tasks"] == 18
            session = status["agent_execution_sessions"][0]
            assert session["input_data"]["material_text"].startswith("什么是逆否命题")
            assert session["result"]["performance_metrics"]["token_usage"]["total_tokens"] > 0
            perf = ex.get_performance_metrics(eid)
            eff = perf["parallel_efficiency"]
            # 18 calls six at a time: the sum of their times is more than the wall time
            assert eff["efficiency_ratio"] > 1
            assert eff["estimated_serial_time_ms"] > eff["total_execution_time_ms"]
            assert perf["throughput"]["tasks_per_second"] > 0

            assert ex.configure_parallel_settings(
                {"agent_configs": {"oral-explanation": {"max_concurrent": 3}}}
            )
            eid2 = await ex.submit_batch_tasks(node_tasks("oral-explanation", 9))
            peak2 = Peak(server)
            await peak2.watch(ex.get_execution_results(eid2))
            assert peak2.value == 3
            # the agent's other settings and the other agents' are kept from the file
            assert ex.config.agents["oral-explanation"].timeout == 90
            assert ex.config.agents["deep-decomposition"].limit == 4

        with sqlite3.connect(tmp_path / "runs.sqlite") as db:
            kinds = dict(db.execute("SELECT id, kind FROM runs").fetchall())
        assert kinds == {eid: "executor", eid2: "executor"}

    run(main)


@pytest.mark.timeout(60)  # the calls take 100 s: only aborting them ends the test in time
def test_cancel_stops_calls_in_flight(tmp_path: Path) -> None:
    """Calls that would take 100 s are aborted: the simulator sees them go, none answered."""

    async def main() -> None:
        async with serving(100.0) as server:
            ex = executor(server, tmp_path)
            eid = await ex.submit_batch_tasks(node_tasks("oral-explanation", 10))
            await until(lambda: server.stats()["in_flight"] >= 3)  # calls on the server
            assert await ex.cancel_execution(eid) is True
            status = await ex.get_execution_status(eid)
            assert status["overall_status"] == "cancelled"
            assert status["task_queue"]["cancelled_tasks"] == 10
            assert {s["status"] for s in status["agent_execution_sessions"]} == {"cancelled"}
            await until(lambda: server.stats()["in_flight"] == 0)  # handlers cancelled
            assert server.stats()["completed_total"] == 0
            assert await ex.cancel_execution(eid) is False  # already ended
            results = await ex.get_execution_results(eid)
            assert results["successful_tasks"] == 0

    run(main)


def test_submit_refuses_bad_tasks_and_settings_before_anything_runs(tmp_path: Path) -> None:
    async def main() -> None:
        async with serving(0.001) as server:
            ex = executor(server, tmp_path)
            tasks = node_tasks("oral-explanation", 2)
            tasks[1]["agent_name"] = "no-such-agent"
            with pytest.raises(InputError, match=r"tasks\[1\]: unknown agent 'no-such-agent'"):
                await ex.submit_batch_tasks(tasks)
            with pytest.raises(InputError, match=r"tasks\[0\]: unknown key 'colour'"):
                await ex.submit_batch_tasks([{**node_tasks("oral-explanation", 1)[0], "colour": 6}])
            with pytest.raises(ConfigError, match="over max_concurrent_limit 10"):
                await ex.submit_batch_tasks(node_tasks("oral-explanation", 1), max_concurrent=20)
            with pytest.raises(InputError, match="no tasks"):
                await ex.submit_batch_tasks([])
            with pytest.raises(FanoutError, match="no execution 'r-nope'"):
                await ex.get_execution_status("r-nope")
            assert server.stats()["requests_total"] == 0
            # refused settings change nothing
            assert not ex.configure_parallel_settings({"default_max_concurrent": 50})
            assert not ex.configure_parallel_settings({"agent_configs": {"x": {"limit": 2}}})
            assert ex.config.concurrency == 8
            assert ex.configure_parallel_settings({"default_max_concurrent": 3})
            assert ex.config.concurrency == 3
            assert ex.configure_parallel_settings({"task_queue": {"max_queue_size": 2}})
            with pytest.raises(InputError, match="holds at most 2 unfinished tasks"):
                await ex.submit_batch_tasks(node_tasks("oral-explanation", 3))
            assert server.stats()["requests_total"] == 0

        assert not (tmp_path / "runs.sqlite").exists() or _runs(tmp_path) == 0

    run(main)


def _runs(tmp_path: Path) -> int:
    with sqlite3.connect(tmp_path / "runs.sqlite") as db:
        return int(db.execute("SELECT count(*) FROM runs").fetchone()[0])


def test_continue_on_error_false_stops_at_the_first_failure(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Set live with configure_parallel_settings: the first failed task (a server error,
    retries off) stops the execution, which is "failed"; error_notification logs it. The
    tasks come in the data model's nested `input_data` form."""

    async def main() -> None:
        server = await start_server(SimConfig(base_latency_s=0.001, faults={"500": 1.0}))
        try:
            ex = executor(server, tmp_path)
            assert ex.configure_parallel_settings(
                {
                    "error_handling": {"continue_on_error": False, "error_notification": True},
                    "agent_configs": {"scoring-agent": {"retry_attempts": 0}},
                }
            )
            tasks = [
                {"agent_name": "scoring-agent", "task_id": f"t-{i}",
                 "input_data": {"node_id": f"n{i}", "material_text": "逆否命题与原命题等价"}}
                for i in range(8)
            ]  # fmt: skip
            eid = await ex.submit_batch_tasks(tasks, max_concurrent=1)
            results = await ex.get_execution_results(eid)
        finally:
            await server.stop()
        assert results["overall_status"] == "failed"
        states = [r["status"] for r in results["results"]]
        # one at a time: t-0 fails first; a call that began before its failure was durable
        # may fail too (or be aborted), the rest never start
        assert states[0] == "failed"
        assert set(states) == {"failed", "cancelled"}
        assert states.count("cancelled") >= 4
        failed_ids = [f["task_id"] for f in results["error_management"]["failed_tasks"]]
        assert failed_ids[0] == "t-0"
        # sent: the failed ones and at most the one in flight when the stop came (aborted)
        assert len(failed_ids) <= server.stats()["requests_total"] <= len(failed_ids) + 1
        status = await ex.get_execution_status(eid)
        assert "t-0 failed" in status["stopped_by"]
        assert status["agent_execution_sessions"][0]["input_data"]["node_id"] == "n0"

    with caplog.at_level(logging.WARNING, logger="fanout.executor"):
        run(main)
    failed = [r.getMessage() for r in caplog.records if "failed:" in r.getMessage()]
    assert failed
    assert "task t-0 (scoring-agent) failed" in failed[0]


def test_exported_from_fanout() -> None:
    assert fanout.ParallelAgentExecutor is ParallelAgentExecutor
    assert "ParallelAgentExecutor" in fanout.__all__


@pytest.mark.e2e
def test_the_documented_example_runs_as_shown(tmp_path: Path) -> None:
    """docs/python-api.md's example, run as a script beside the seed file: it prints what
    the page shows (the figures aside)."""
    import os
    import re
    import subprocess
    import sys

    doc = (Path(__file__).parent.parent / "docs" / "python-api.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(.*?)```", doc, re.S)
    assert code is not None
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "parallel_agents.yaml").write_bytes(SEED_YAML.read_bytes())
    (tmp_path / "demo.py").write_text(code.group(1), encoding="utf-8")
    env = {**os.environ, "FANOUT_HOME": str(tmp_path / "home")}
    proc = subprocess.run(
        [sys.executable, "demo.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
        encoding="utf-8", timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("{'total_tasks': 3, ")
    assert lines[1] == "completed 3 of 3"
    assert "'verdicts'" in lines[2]
    assert '"efficiency_ratio"' in lines[3]
    runs = subprocess.run(
        [sys.executable, "-m", "fanout", "runs"], cwd=tmp_path, env=env, capture_output=True,
        text=True, encoding="utf-8", timeout=60,
    )  # fmt: skip
    assert re.search(r"r-\w+\s+executor\s+done\s+3/3", runs.stdout), runs.stdout


def test_task_dicts_become_the_agents_tasks() -> None:
    """The original's dict keys land in the blueprint's inputs, key, priority, order."""
    from fanout.agents import load_blueprints
    from fanout.config_legacy import SeedSettings
    from fanout.executor.tasks import to_tasks
    from fanout.tasks import Priority

    bps = load_blueprints()
    tasks, origins = to_tasks(
        [
            {"agent_name": "oral-explanation", "node_id": "n1", "node_content": "逆否命题",
             "canvas_path": "笔记库\\离散数学\\离散数学.canvas", "guidance": "从定义开始",
             "priority": "urgent", "estimated_duration": 7},
            {"agent": "scoring-agent", "task_id": "s1", "priority": 0,
             "dependencies": "n1:oral-explanation",
             "input_data": {"material_text": "我的理解", "question": "什么是逆否命题？"}},
        ],
        bps,
        SeedSettings(),
    )  # fmt: skip
    oral, score = tasks
    assert oral.key == "n1:oral-explanation"
    assert oral.partition == "n1"
    assert oral.priority is Priority.URGENT
    assert oral.expected_s == 7
    assert oral.inputs is not None
    assert oral.inputs["topic"] == "离散数学"
    assert "Guidance: 从定义开始" in oral.inputs["context"]
    assert oral.inputs["question"] == oral.inputs["learner_text"] == "逆否命题"
    assert score.key == "s1"
    assert score.priority is Priority.LOW
    assert score.depends_on == ("n1:oral-explanation",)
    assert score.inputs is not None
    assert score.inputs["question"] == "什么是逆否命题？"
    assert score.inputs["learner_text"] == "我的理解"
    assert [o.task_id for o in origins] == ["n1:oral-explanation", "s1"]
    # a plain FIFO queue has one level; a level the config does not list is refused
    fifo, _ = to_tasks(
        [{"agent_name": "scoring-agent", "node_content": "x", "priority": "urgent"}],
        bps,
        SeedSettings(use_priorities=False),
    )
    assert fifo[0].priority is Priority.NORMAL
    with pytest.raises(InputError, match=r"tasks\[0\]: priority 'urgent' is not one of"):
        to_tasks(
            [{"agent_name": "scoring-agent", "node_content": "x", "priority": "urgent"}],
            bps,
            SeedSettings(priority_levels=("normal", "low")),
        )
    with pytest.raises(InputError, match=r"tasks\[1\]: task_id 'a' is also tasks\[0\]'s"):
        to_tasks([{"agent_name": "scoring-agent", "node_content": "x", "task_id": "a"}] * 2, bps,
                 SeedSettings())  # fmt: skip
    with pytest.raises(InputError, match=r"depends on 'zz', which is no task_id"):
        to_tasks([{"agent_name": "scoring-agent", "node_content": "x", "dependencies": ["zz"]}],
                 bps, SeedSettings())  # fmt: skip
