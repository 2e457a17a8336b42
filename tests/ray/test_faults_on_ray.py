"""Faults on the cluster: the driver SIGKILLed and resumed answers nothing twice; the
second node stopped mid-run loses no task (this file runs last: it takes the node away)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fanout.backends.ray import RayBackend
from fanout.engine.engine import Engine
from fanout.engine.retry import RetryPolicy
from fanout.providers.sim import SimConfig, SimProvider
from fanout.tasks import Task, TaskState
from tests.benches import bench_module
from tests.e2e.test_cli_batch import ROOT, read_jsonl, write_jsonl
from tests.ray.conftest import Cluster

pytestmark = pytest.mark.e2e
TASKS = 24


def test_driver_killed_then_resumed_answers_nothing_twice(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    crash = bench_module("crash")
    env = {**ray_cluster.env, "FANOUT_HOME": str(tmp_path / "home")}
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"第 {i} 问"} for i in range(TASKS)]
    )
    out = tmp_path / "out.jsonl"
    db = tmp_path / "home" / "fanout.db"
    common = ["--no-progress", "--json", "--no-cache"]
    with crash.sim_server(tmp_path, "150ms", env) as url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(out),
             "--provider", "openai", "--base-url", url + "/v1", "--concurrency", "4",
             "--backend", "ray", "--ray-address", ray_cluster.address, *common],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )  # fmt: skip
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("run r-"), (first, proc.communicate())
        run_id = first.split()[1]
        crash.wait_for_progress(proc, db, run_id, 3)  # a few committed, the rest under way
        proc.kill()
        proc.communicate()
        at_kill = crash.settled_stats(url)
        committed = crash.committed(db, run_id)
        assert 0 < len(committed) < TASKS
        resumed = subprocess.run(
            [sys.executable, "-m", "fanout", "resume", run_id, *common],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
        )  # fmt: skip
        assert resumed.returncode == 0, resumed.stderr
        final = crash.settled_stats(url)
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["done"] == TASKS
    assert len(read_jsonl(out)) == TASKS
    assert len(final) == TASKS  # every request answered
    for h in committed:  # nothing committed before the kill was asked again
        assert final[h] == at_kill[h] == 1
    assert max(final.values()) <= 2  # at most the answers the kill lost, once more


def test_second_node_stopped_mid_run_loses_no_task(ray_cluster: Cluster) -> None:
    import ray

    async def main() -> tuple[list[tuple[TaskState, int]], list[str]]:
        slow = SimProvider(SimConfig(seed=2, base_latency_s=1.0, jitter=0.0))
        backend = RayBackend(ray_cluster.address, actors=2)
        retry = RetryPolicy(attempts=3, backoff_base_s=0.05, backoff_cap_s=0.2)
        async with Engine(providers=slow, backend=backend, concurrency=8, retry=retry) as e:
            where = await backend.nodes()
            alive = [(n["NodeID"], n["Alive"], n.get("Resources")) for n in ray.nodes()]
            assert len(set(where)) == 2, (where, alive)  # one actor on each node
            run = e.submit([Task(key=f"k{i}", prompt=f"问题 {i}") for i in range(TASKS)])
            # a state to reach, polled: the run emits no event for "8 calls in flight"
            while run.counts()["running"] < 8:  # noqa: ASYNC110 (calls under way on both nodes)
                await asyncio.sleep(0.05)
            ray_cluster.worker.kill()
            await run.wait()
            # the lost node's actor is replaced on the node that remains, once the cluster
            # has noticed the node is gone (its health checks: about 10 s)
            async with asyncio.timeout(120):
                while backend.live_actors < 2:  # noqa: ASYNC110 (no event for it)
                    await asyncio.sleep(0.2)
            return [(r.state, r.attempts) for r in await run.results()], await backend.nodes()

    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(nodes) == 2
    results, where = asyncio.run(main())
    assert [state for state, _ in results] == [TaskState.DONE] * TASKS
    assert any(attempts > 1 for _, attempts in results)  # the lost node's calls, retried
    alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert len(alive) == 1
    assert where == [*alive, *alive]  # two actors again, both on the node that remains
