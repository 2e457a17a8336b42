"""429 against 529 in the engine, as docs/usage.md says: a 429 that names its wait acts
through the pause alone and never halves the adaptive concurrency; a 529 (overloaded), or
a 429 that names no wait, halves it. Each is retried, and every task ends done."""

from __future__ import annotations

import asyncio

import pytest

from fanout import CallableProvider, Engine, ProviderLimits, Request, RetryPolicy, Task
from fanout.errors import Overloaded, RateLimited

from .support import arun


def faulty(kind: str) -> CallableProvider:
    """The first three calls fail with `kind`, the rest answer."""
    left = {"n": 3}

    async def call(req: Request) -> str:
        await asyncio.sleep(0.001)
        if left["n"] > 0:
            left["n"] -= 1
            if kind == "429 with retry-after":
                raise RateLimited("rate limited", status=429, retry_after=0.05)
            if kind == "429 without":
                raise RateLimited("rate limited", status=429)
            raise Overloaded("overloaded", status=529)
        return "答"

    return CallableProvider(call, name="p")


@pytest.mark.parametrize(
    ("kind", "halves"),
    [("429 with retry-after", False), ("429 without", True), ("529", True)],
)
def test_which_errors_halve_the_adaptive_concurrency(kind: str, halves: bool) -> None:
    async def main() -> tuple[int, int, float]:
        async with Engine(
            providers=faulty(kind),
            concurrency=8,
            limits={"p": ProviderLimits(concurrency=8)},
            retry=RetryPolicy(attempts=6, backoff_base_s=0.001, budget=100),
        ) as engine:
            run = engine.submit([Task(f"问{i}") for i in range(24)])
            m = await run.wait()
            meter = next(iter(engine.provider_meters.values()))
            return m["done"], meter.decreases, m["retries"]

    done, decreases, retries = arun(main)
    assert done == 24
    assert retries == 3
    if halves:
        assert decreases >= 1
    else:
        assert decreases == 0
