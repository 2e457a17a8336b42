"""A run's cost cap: it stops within one call's estimate of the cap, never passes it by more
than the calls in flight, ends `budget_exhausted`, and resumes with a higher cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from fanout import ConfigError, Engine, SimConfig, SimProvider, SqliteStore, Task, TaskState
from fanout.engine.budget import DEFAULT_PRICES, Price, Prices, RunBudget

from .support import arun


def test_prices_match_exactly_then_by_the_longest_prefix() -> None:
    prices = Prices({"gpt-4o": Price(2.5, 10), "gpt-4o-mini": Price(0.15, 0.6)})
    assert prices.of("gpt-4o-mini-2024-07-18") == Price(0.15, 0.6)
    assert prices.of("gpt-4o-2024-08-06") == Price(2.5, 10)
    assert prices.of("llama3") is None
    assert prices.cost("gpt-4o", 1_000_000, 100_000) == pytest.approx(2.5 + 1.0)


def test_a_call_starts_only_while_spent_plus_in_flight_stays_under_the_cap() -> None:
    b = RunBudget(Prices({"m": Price(1.0, 2.0)}), max_cost_usd=0.01)
    est = (1000, 1000)  # $0.003 a call
    assert b.admit(1, "m", *est)
    assert b.admit(2, "m", *est)
    assert b.admit(3, "m", *est)
    assert not b.admit(4, "m", *est)  # 0.009 held + 0.003 > 0.01
    assert b.in_flight == 3
    assert not b.exhausted  # a refusal while others are out only waits
    b.settle(1, "m", 500, 200)  # what it really used: $0.0009
    assert b.spent_usd == pytest.approx(0.0009)
    assert b.admit(4, "m", *est)  # 0.0009 + 0.006 + 0.003 <= 0.01
    tokens = RunBudget(Prices({}), max_tokens=100)
    assert tokens.admit(1, "x", 40, 40)
    assert not tokens.admit(2, "x", 10, 20)


def test_a_cost_cap_needs_a_price_for_every_model() -> None:
    async def main() -> None:
        async with Engine() as e:
            with pytest.raises(ConfigError, match="price of model 'mystery'"):
                e.submit([Task("x", model="mystery")], max_cost_usd=1.0)
            run = e.submit([Task("x", model="mystery")])  # no cap: no price needed
            await run.wait()
            assert run.metrics()["cost_usd"] == 0.0

    arun(main)


def test_a_run_stops_at_its_cap_and_resumes_with_a_higher_one(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    sim = SimConfig(base_latency_s=0.002, jitter=0.0, per_token_s=0.0)
    price = DEFAULT_PRICES["sim-1"]
    tasks = [Task(f"问题 {i}: explain idea {i}", key=f"k{i}", max_tokens=200) for i in range(40)]
    cap = 0.004

    async def main() -> None:
        async with Engine(providers=SimProvider(sim), store=SqliteStore(path), concurrency=4) as e:
            run = e.submit(tasks, max_cost_usd=cap)
            m = await run.wait()
            assert run.status == "budget_exhausted"
            assert 0 < m["done"] < 40
            assert m["cost_usd"] <= cap
            # it stopped within one call's estimate of the cap (the prompt, 200 tokens out)
            one_call = price.cost(50, 200)
            assert cap - m["cost_usd"] <= one_call
            results = await run.results()
            spent = sum(price.cost(r.input_tokens, r.output_tokens) for r in results)
            assert spent == pytest.approx(m["cost_usd"])
            done_before = {r.key for r in results if r.ok}
            run_id = run.id
        async with Engine(providers=SimProvider(sim), store=SqliteStore(path)) as e:
            run = await e.resume(run_id, max_cost_usd=cap / 2)  # spent counts: no room
            m = await run.wait()
            assert run.status == "budget_exhausted"
            assert m["done"] == len(done_before)
        async with Engine(providers=SimProvider(sim), store=SqliteStore(path)) as e:
            run = await e.resume(run_id, max_cost_usd=1.0)
            m = await run.wait()
            assert run.status == "done"
            assert all(t.state is TaskState.DONE for t in run.tasks)
            assert m["cost_usd"] <= 1.0

    arun(main)


def test_an_answer_that_fails_its_checks_is_still_counted_against_the_cap() -> None:
    """Truncated or invalid answers were billed: a capped run counts them."""
    from fanout import CallableProvider, Completion, Request

    async def cut(req: Request) -> Completion:
        return Completion(text="half an answ", finish_reason="length", input_tokens=40,
                          output_tokens=60)  # fmt: skip

    async def main() -> None:
        async with Engine(providers=CallableProvider(cut, name="p")) as e:
            run = e.submit([Task(f"q{i}", max_tokens=100) for i in range(3)], max_tokens=100_000)
            await run.wait()
            assert run.metrics()["failed"] == 3
            # each task tried twice (a truncated answer gets one retry with more room)
            assert run.budget.spent_tokens == 3 * 2 * 100

    arun(main)
