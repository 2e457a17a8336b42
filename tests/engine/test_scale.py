"""Bounded memory: a 100,000-task run holds a fixed number of asyncio tasks."""

from __future__ import annotations

import asyncio

from fanout import CallableProvider, Engine, Request, Task

from .support import arun

N = 100_000
CONCURRENCY = 16


def test_a_100k_task_run_keeps_a_fixed_number_of_asyncio_tasks() -> None:
    samples: list[int] = []
    calls = 0

    async def noop(req: Request) -> str:
        nonlocal calls
        calls += 1
        if calls % 2000 == 1:
            samples.append(len(asyncio.all_tasks()))
        if calls % 7 == 0:
            await asyncio.sleep(0)  # some calls yield, as real ones do
        return "ok"

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(noop, name="noop"), concurrency=CONCURRENCY
        ) as engine:
            run = engine.submit(Task("same prompt", key=f"t{i}") for i in range(N))
            m = await run.wait()
            assert (m["done"], m["total"], m["failed"]) == (N, N, 0)
            assert run.tasks[-1].id == f"{run.id}-{N - 1}"
            assert len(await run.results()) == N

    arun(main)
    assert calls == N
    assert len(samples) == N // 2000
    # workers, the ticker, the journal, the test's own task: a constant, not one per task
    assert max(samples) <= CONCURRENCY + 10
