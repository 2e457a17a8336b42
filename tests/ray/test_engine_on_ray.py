"""The engine with `RayBackend` against the session's real local cluster, in this process:
the same results as the local backend, CPU agents in worker processes, timeouts."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from fanout.backends.ray import RayBackend
from fanout.engine.engine import Engine
from fanout.engine.retry import RetryPolicy
from fanout.providers.base import CallableProvider, Provider
from fanout.providers.sim import SimConfig, SimProvider
from fanout.tasks import Task, TaskState
from tests.ray.agents import burn
from tests.ray.conftest import Cluster

FAST_RETRY = RetryPolicy(attempts=4, backoff_base_s=0.01, backoff_cap_s=0.05)


def _run(
    providers: dict[str, Provider], tasks: list[Task], backend: RayBackend | None, **kw: Any
) -> dict[str, tuple[TaskState, str | None, int, str | None]]:
    return asyncio.run(_arun(providers, tasks, backend, **kw))


async def _arun(
    providers: dict[str, Provider], tasks: list[Task], backend: RayBackend | None, **kw: Any
) -> dict[str, tuple[TaskState, str | None, int, str | None]]:
    kw.setdefault("retry", FAST_RETRY)
    async with Engine(providers=providers, backend=backend, **kw) as engine:
        run = await engine.run(tasks)
        return {
            r.task.key: (r.state, r.text, r.attempts, r.error.kind if r.error else None)
            for r in await run.results()
        }


def _tasks(n: int) -> list[Task]:
    return [Task(key=f"任务{i}", prompt=f"解释第 {i} 个概念：图论与树") for i in range(n)]


def test_results_equal_the_local_backend_for_the_same_seed(ray_cluster: Cluster) -> None:
    def sim() -> SimProvider:  # injected faults make retries part of what must match
        return SimProvider(SimConfig(seed=11, base_latency_s=0.01, faults={"500": 0.2}))

    local = _run({"sim": sim()}, _tasks(40), None, concurrency=8, seed=3)
    backend = RayBackend(ray_cluster.address)
    remote = _run({"sim": sim()}, _tasks(40), backend, concurrency=8, seed=3)
    assert remote == local
    assert any(attempts > 1 for _, _, attempts, _ in local.values())  # retries happened
    assert all(state == TaskState.DONE for state, *_ in local.values())
    # the attempts went in batches: fewer Ray calls than attempts
    assert 0 < backend.batches < sum(attempts for _, _, attempts, _ in remote.values())


def test_cpu_agents_run_in_worker_processes(ray_cluster: Cluster) -> None:
    cpu = CallableProvider(burn, name="burn", cpu=True)
    out = _run({"burn": cpu}, _tasks(12), RayBackend(ray_cluster.address), concurrency=4)
    assert all(state == TaskState.DONE for state, *_ in out.values())
    pids = {int(text.split()[0]) for _, text, _, _ in out.values() if text}
    assert os.getpid() not in pids  # not run here: in Ray worker processes
    text = out["任务3"][1]
    assert text is not None
    assert text.endswith("解释第 3 个概念：图论与树")


def test_cpu_calls_take_about_one_ray_call_per_three_calls(ray_cluster: Cluster) -> None:
    """Four calls queued per CPU actor (12 places, 3 CPUs): an actor answers when only its
    running call is left, three outcomes at once, and the driver's next poll carries their
    three successors. A submit and a poll per two calls (the pairs of before) were a Ray
    call per call, each a few ms of CPU taken from the cores the calls run on."""
    cpu = CallableProvider(burn, name="burn", cpu=True)
    backend = RayBackend(ray_cluster.address)
    out = _run({"burn": cpu}, _tasks(60), backend, concurrency=12)
    assert all(state == TaskState.DONE for state, *_ in out.values())
    assert all(
        (text or "").endswith(f"解释第 {key[2:]} 个概念：图论与树")
        for key, (_, text, _, _) in out.items()
    )
    assert backend.calls <= 0.75 * 60, (backend.calls, backend.batches)


def test_a_cpu_function_that_does_not_pickle_is_one_clear_error(ray_cluster: Cluster) -> None:
    import threading

    lock = threading.Lock()

    def holds_a_lock(request: object) -> str:
        with lock:
            return "x"

    provider = CallableProvider(holds_a_lock, name="locked", cpu=True)
    with pytest.raises(Exception, match="cannot be sent to the Ray workers") as info:
        _run({"locked": provider}, _tasks(1), RayBackend(ray_cluster.address))
    assert "module level" in str(info.value)


def test_a_cpu_function_the_workers_cannot_import_fails_permanently(
    ray_cluster: Cluster,
) -> None:
    provider = CallableProvider(burn, name="gone", cpu=True, ref="no_such_pkg.agents:burn")
    out = _run({"gone": provider}, _tasks(2), RayBackend(ray_cluster.address))
    state, _, attempts, kind = out["任务0"]
    assert state == TaskState.FAILED
    assert attempts == 1  # permanent: not retried
    assert kind == "bad_request"


def test_a_timeout_cancels_the_call_on_the_cluster(ray_cluster: Cluster) -> None:
    async def main() -> tuple[set[str | None], int]:
        slow = SimProvider(SimConfig(seed=1, base_latency_s=30.0, jitter=0.0))
        backend = RayBackend(ray_cluster.address)
        async with Engine(
            providers={"sim": slow}, backend=backend, concurrency=2, timeout=0.5,
            retry=RetryPolicy(attempts=1),
        ) as engine:  # fmt: skip
            run = await engine.run(_tasks(2))
            kinds = {r.error.kind if r.error else None for r in await run.results()}
            # the actor stops the timed-out calls (their cancel is on its way): a state
            # to reach, polled, well before the 30 s the calls would otherwise take
            async with asyncio.timeout(20):
                while (left := await backend.running()) > 0:  # noqa: ASYNC110 (no event)
                    await asyncio.sleep(0.1)
            return kinds, left

    kinds, left = asyncio.run(main())
    assert kinds == {"timeout"}
    assert left == 0


def test_cpu_is_only_for_python_providers() -> None:
    from pydantic import ValidationError

    from fanout.providers.spec import ProviderSpec

    with pytest.raises(ValidationError, match="`cpu` is only for type python"):
        ProviderSpec(type="sim", cpu=True)
    spec = ProviderSpec(type="python", callable="tests.ray.agents:burn", cpu=True)
    assert spec.cpu is True
