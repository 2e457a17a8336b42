"""Run metrics: serial estimate, speedup and utilisation agree with what the provider saw;
failures and retries are counted by kind; percentiles and tokens add up."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from fanout import (
    CallableProvider,
    Completion,
    Engine,
    Request,
    RetryPolicy,
    RunFinished,
    Task,
    TaskStarted,
)
from fanout.engine.metrics import percentile
from fanout.errors import BadRequest, EmptyOutput, RateLimited, ServerError

from .support import Recorder, arun


class Timed:
    """Sleeps a per-prompt time, fails per a per-prompt plan, and records each attempt's
    duration as the provider itself measured it."""

    def __init__(self, plan: dict[str, list[BaseException | None]]) -> None:
        self.plan = plan
        self.durations: list[float] = []

    async def __call__(self, req: Request) -> Completion:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        name = req.messages[0]["content"]
        try:
            await asyncio.sleep(0.01 + 0.001 * (len(name) % 7))
        finally:
            self.durations.append(loop.time() - t0)
        steps = self.plan.get(name, [])
        step = steps[req.attempt - 1] if req.attempt <= len(steps) else None
        if step is not None:
            raise step
        return Completion(text=f"{name} ok", input_tokens=3, output_tokens=5, model="m")


class LoopLag:
    """How late the event loop ran a 1 ms timer, summed over the lateness beyond 1 ms:
    the time this process was held back (by the machine's load, or a slow step)."""

    def __init__(self) -> None:
        self.total_s = 0.0

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        async def watch() -> None:
            loop = asyncio.get_running_loop()
            while True:
                t0 = loop.time()
                await asyncio.sleep(0.001)
                self.total_s += max(0.0, loop.time() - t0 - 0.002)

        task = asyncio.create_task(watch())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def test_serial_speedup_and_utilisation_agree_with_the_attempts() -> None:
    provider = Timed({"t3": [ServerError("500", status=500)], "t5": [BadRequest("no")]})
    rec = Recorder()
    concurrency = 10

    lag = LoopLag()

    async def main() -> dict[str, Any]:
        async with Engine(
            providers=CallableProvider(provider.__call__),
            concurrency=concurrency,
            retry=RetryPolicy(backoff_base_s=0.001),
        ) as engine:
            run = engine.submit([Task(f"t{i}", agent="a" if i % 2 else "b") for i in range(40)])
            run.listen(rec)
            async with lag.watching():
                return await run.wait()

    m = arun(main)
    provider_sum = sum(provider.durations)
    assert len(provider.durations) == m["attempts"] == 41
    # the engine's attempt time encloses the provider's own: never less, barely more. A
    # loaded machine stalls the loop now and then, and a stall of L adds L to each attempt
    # running through it (at most `concurrency`): that much more is the machine, not us.
    stalls = concurrency * lag.total_s
    assert m["serial_s"] >= provider_sum - 1e-3
    assert m["serial_s"] <= provider_sum * 1.2 + 0.01 + stalls
    assert m["speedup"] == pytest.approx(m["serial_s"] / m["wall_s"], rel=0.01)
    assert m["utilisation"] == pytest.approx(m["speedup"] / concurrency, rel=0.01)
    assert 0.0 < m["utilisation"] <= 1.0
    assert m["speedup"] > 2.0  # 41 attempts of >= 10 ms on 10 slots cannot be serial
    # wall time runs from RunStarted (before the first start) to RunFinished
    first = rec.of(TaskStarted)[0]
    end = rec.of(RunFinished)[0]
    assert m["wall_s"] >= end.t - first.t - 1e-4
    assert m["throughput_per_s"] == pytest.approx(40 / m["wall_s"], rel=0.02)
    assert (m["input_tokens"], m["output_tokens"]) == (39 * 3, 39 * 5)
    assert set(m["p50_by_agent"]) == {"a", "b"}
    assert 0.0 < m["p50_s"] <= m["p95_s"] <= max(provider.durations) + 0.01 + lag.total_s
    assert m["eta_s"] is None


def test_failures_and_retries_are_counted_by_kind() -> None:
    plan: dict[str, list[BaseException | None]] = {
        "bad": [BadRequest("no", status=400)],
        "limited-once": [RateLimited("429", status=429)],
        "always-500": [ServerError("500", status=500)] * 3,
        "empty-twice": [EmptyOutput("e"), EmptyOutput("e")],
        "boom": [RuntimeError("bug")],
        "fine": [],
    }
    provider = Timed(plan)

    async def main() -> dict[str, Any]:
        async with Engine(
            providers=CallableProvider(provider.__call__),
            retry=RetryPolicy(attempts=3, backoff_base_s=0.001),
        ) as engine:
            run = await engine.run([Task(name, key=name) for name in plan])
            return run.metrics()

    m = arun(main)
    assert m["failures_by_kind"] == {
        "bad_request": 1,
        "server_error": 1,
        "empty_output": 1,
        "exception": 1,
    }
    assert m["retries_by_kind"] == {"rate_limited": 1, "server_error": 2, "empty_output": 1}
    assert (m["done"], m["failed"], m["retries"], m["attempts"]) == (2, 4, 4, 10)
    assert m["status"] == "failed"


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 50) == 50.0  # the 50th of 100: half are at or below it
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99.5) == 100.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 100.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0  # not 3.0 (rounding up), nor 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 51) == 3.0
    assert percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert percentile([], 50) == 0.0
    assert percentile([3.0], 95) == 3.0
