"""Provider limits: GCRA budgets, the provider meter (AIMD, pauses, token reconciliation),
and the engine against the simulator's own RPM/TPM enforcement."""

from __future__ import annotations

import asyncio
import math

import pytest

from fanout import (
    CallableProvider,
    Engine,
    ProviderLimits,
    Request,
    RetryPolicy,
    SimConfig,
    SimProvider,
    Task,
    TaskState,
)
from fanout.engine.limits import (
    ERROR,
    OK,
    OVERLOADED,
    RATE_LIMITED,
    ConcurrencyMeter,
    Gcra,
    ProviderMeter,
)
from fanout.engine.meters import burst_for
from fanout.errors import Overloaded

from .support import arun

INF = math.inf


def task(est_tokens: int = 10) -> Task:
    t = Task("x")
    t.est_tokens = est_tokens
    return t


# -- GCRA -------------------------------------------------------------------------------


def test_gcra_admits_a_burst_then_one_request_per_interval() -> None:
    g = Gcra(60, burst_s=5.0)  # one request a second (exact in binary floating point)
    now = 1000.0
    admitted = 0
    while g.wait_time(now) == 0.0:
        g.charge(now, 1)
        admitted += 1
    assert admitted == 6  # the first, and 5 s worth of budget
    assert g.wait_time(now) == 1.0
    now += 1.0
    assert g.wait_time(now) == 0.0
    g.charge(now, 1)
    assert g.wait_time(now) == 1.0


def test_gcra_long_run_rate_never_exceeds_the_budget_plus_the_burst() -> None:
    g = Gcra(1200, burst_s=0.5)
    now, admitted = 0.0, 0
    while now < 60.0:
        w = g.wait_time(now)
        if w > 0.0:
            now += w
            continue
        g.charge(now, 1)
        admitted += 1
    assert 1200 <= admitted <= 1200 + 0.5 * 1200 / 60 + 1


def test_gcra_lets_a_request_larger_than_the_burst_through_and_the_next_waits() -> None:
    g = Gcra(60, burst_s=0.5)  # one unit per second
    assert g.wait_time(10.0) == 0.0
    g.charge(10.0, 5)  # five seconds of budget at once
    assert g.wait_time(10.0) == pytest.approx(4.5)
    g.refund(3)  # it used only two: reconcile
    assert g.wait_time(10.0) == pytest.approx(1.5)


def test_gcra_budget_recovers_while_idle_but_does_not_bank_beyond_the_burst() -> None:
    g = Gcra(60, burst_s=0.5)
    g.charge(0.0, 1)
    # a long idle spell does not bank more than the burst
    now = 1000.0
    n = 0
    while g.wait_time(now) == 0.0:
        g.charge(now, 1)
        n += 1
    assert n == 1  # 0.5 s of burst is less than one unit at 1 unit/s


@pytest.mark.parametrize(("rpm", "burst"), [(60, 0.0), (100, 0.4), (600, 0.5), (100_000, 0.5)])
def test_client_burst_stays_within_a_one_second_server_window(rpm: float, burst: float) -> None:
    assert burst_for(rpm) == pytest.approx(burst)
    assert burst_for(rpm) + 60.0 / rpm <= 1.0 + 1e-9 or burst_for(rpm) == 0.0


# -- concurrency and provider meters ------------------------------------------------------


def test_concurrency_meter_counts_in_flight() -> None:
    m = ConcurrencyMeter("lane x", 2)
    t = task()
    m.started(0.0, t)
    assert m.wait_time(0.0, t) == 0.0
    m.started(0.0, t)
    assert m.wait_time(0.0, t) == INF
    m.finished(1.0, t, OK, 0)
    assert m.wait_time(1.0, t) == 0.0
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyMeter("bad", 0)


def test_provider_limits_validate() -> None:
    with pytest.raises(ValueError, match="rpm"):
        ProviderLimits(rpm=0)
    with pytest.raises(ValueError, match="tpm"):
        ProviderLimits(tpm=-5)
    with pytest.raises(ValueError, match="concurrency"):
        ProviderLimits(concurrency=0)


def test_aimd_halves_on_overload_once_per_cooldown_and_climbs_back() -> None:
    m = ProviderMeter("p:m", ProviderLimits(concurrency=8), default_cap=100)
    t = task()
    assert (m.cap, m.limit) == (8.0, 8.0)

    def one(now: float, outcome: str) -> None:
        m.started(now, t)
        m.finished(now, t, outcome, 5)

    one(0.0, OVERLOADED)
    assert m.limit == 4.0
    one(0.5, OVERLOADED)  # the same burst of 429s: one signal
    assert m.limit == 4.0
    one(1.0, OVERLOADED)
    assert m.limit == 2.0
    for k in range(2, 6):
        one(float(k), OVERLOADED)
    assert m.limit == 1.0  # never below one
    assert m.decreases == 6  # every signal a cooldown apart counts, even at the floor
    one(10.0, ERROR)  # an ordinary error says nothing about capacity
    assert m.limit == 1.0
    limits = []
    for _ in range(200):
        one(20.0, OK)
        limits.append(m.limit)
    assert limits == sorted(limits)  # additive increase: up only
    assert limits[0] == 2.0  # 1 + 1/1
    assert max(limits) == 8.0 == m.limit  # back to the cap, never beyond
    successes_to_cap = limits.index(8.0) + 1
    assert 20 <= successes_to_cap <= 40  # about (8^2 - 1^2) / 2: a slow climb


def test_a_429_with_retry_after_never_halves_the_concurrency() -> None:
    """A 429 that names its wait acts through the pause and the learned rate alone: noise
    429s (as an overloaded provider sends) must not shrink the concurrency."""
    m = ProviderMeter("p:m", ProviderLimits(concurrency=8), default_cap=100)
    t = task()
    for k in range(10):
        m.started(float(k), t)
        m.finished(float(k), t, RATE_LIMITED, 0)
    assert (m.limit, m.decreases) == (8.0, 0)


def test_the_adaptive_limit_gates_new_calls_and_can_be_turned_off() -> None:
    m = ProviderMeter("p:m", ProviderLimits(concurrency=4), default_cap=100)
    t = task()
    for _ in range(4):
        m.started(0.0, t)
    assert m.wait_time(0.0, t) == INF
    m.finished(0.0, t, OVERLOADED, 0)  # 3 in flight, limit 2
    assert m.limit == 2.0
    assert m.wait_time(0.0, t) == INF
    m.finished(0.1, t, OK, 5)
    m.finished(0.1, t, OK, 5)  # 1 in flight
    assert m.wait_time(0.1, t) == 0.0

    fixed = ProviderMeter("p:m", ProviderLimits(concurrency=4, adaptive=False), default_cap=100)
    fixed.started(0.0, t)
    fixed.finished(0.0, t, OVERLOADED, 0)
    assert fixed.limit == 4.0
    default = ProviderMeter("p:m", ProviderLimits(), default_cap=16)
    assert default.cap == 16.0


def test_a_pause_holds_every_call_until_it_passes() -> None:
    m = ProviderMeter("p:m", ProviderLimits(), default_cap=4)
    t = task()
    m.pause(100.0, 2.0)
    assert m.wait_time(100.0, t) == pytest.approx(2.0)
    m.pause(100.5, 0.5)  # a shorter pause does not shorten the longer one
    assert m.wait_time(101.0, t) == pytest.approx(1.0)
    assert m.wait_time(102.0, t) == 0.0


def test_rpm_and_tpm_budgets_charge_estimates_and_reconcile_with_usage() -> None:
    m = ProviderMeter("p:m", ProviderLimits(rpm=60, tpm=600), default_cap=100)
    big = task(est_tokens=100)  # 10 s of token budget
    assert m.wait_time(0.0, big) == 0.0
    m.started(0.0, big)
    assert m.wait_time(0.0, big) == pytest.approx(10.0 - 0.5)  # tpm binds
    m.finished(0.0, big, OK, 20)  # it used 20 tokens, not 100
    assert m.wait_time(0.0, big) == pytest.approx(2.0 - 0.5)
    m2 = ProviderMeter("p:m", ProviderLimits(rpm=60), default_cap=100)
    m2.started(0.0, big)
    assert m2.wait_time(0.0, big) == pytest.approx(1.0)  # one request a second, no burst


# -- the engine against the simulator's enforcement ---------------------------------------


def sim(rpm: float | None = None, tpm: float | None = None, **kw: float) -> SimProvider:
    return SimProvider(
        SimConfig(
            base_latency_s=0.001,
            jitter=0.0,
            rpm=rpm,
            tpm=tpm,
            min_output_tokens=20,
            max_output_tokens=40,
            **kw,  # type: ignore[arg-type]
        )
    )


def test_the_rpm_limiter_keeps_the_simulator_from_ever_rejecting() -> None:
    provider = sim(rpm=3000)  # bursts of 1 s (50 requests), then one every 20 ms

    async def main() -> None:
        async with Engine(
            providers=provider, concurrency=16, limits={"sim": ProviderLimits(rpm=3000)}
        ) as engine:
            run = await engine.run([Task(f"question {i}") for i in range(80)])
            assert run.metrics()["done"] == 80

    arun(main)
    stats = provider.stats()
    assert stats["rejected_429"] == 0
    assert stats["completed_total"] == 80


def test_the_tpm_limiter_keeps_the_simulator_from_ever_rejecting() -> None:
    provider = sim(tpm=120_000)  # 2,000 tokens a second

    async def main() -> None:
        async with Engine(
            providers=provider,
            concurrency=16,
            max_tokens=45,
            limits={"sim": ProviderLimits(tpm=120_000)},
        ) as engine:
            run = await engine.run([Task(f"question number {i} please") for i in range(60)])
            assert run.metrics()["done"] == 60

    arun(main)
    assert provider.stats()["rejected_429"] == 0


def test_without_a_client_limit_the_simulator_rejects_and_retries_finish_the_run() -> None:
    provider = sim(rpm=3000)

    async def main() -> None:
        async with Engine(
            providers=provider,
            concurrency=16,
            retry=RetryPolicy(attempts=20, backoff_base_s=0.001, budget=10_000),
        ) as engine:
            run = await engine.run([Task(f"question {i}") for i in range(80)])
            assert all(t.state is TaskState.DONE for t in run.tasks)
            assert run.metrics()["retries_by_kind"].get("rate_limited", 0) > 0
            meter = engine.provider_meters["sim:sim-1"]
            # the 429s (each naming its wait) taught a rate; they never halved the concurrency
            assert meter.rate_cuts >= 1
            assert meter.decreases == 0

    arun(main)
    stats = provider.stats()
    assert stats["rejected_429"] > 0
    assert stats["completed_total"] == 80


def test_aimd_in_the_engine_backs_off_on_overload_and_recovers() -> None:
    seen: list[tuple[float, int]] = []  # (limit, in flight) at each call
    overloaded = {"left": 6}
    meter_ref: list[ProviderMeter] = []

    async def flaky(req: Request) -> str:
        m = meter_ref[0]
        seen.append((m.limit, m.inflight))
        assert m.inflight <= int(m.limit)
        await asyncio.sleep(0.001)
        if overloaded["left"] > 0:
            overloaded["left"] -= 1
            raise Overloaded("overloaded", status=529)
        return "fine"

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(flaky, name="p"),
            concurrency=8,
            limits={"p": ProviderLimits(concurrency=8)},
            retry=RetryPolicy(attempts=5, backoff_base_s=0.001, budget=100),
        ) as engine:
            run = engine.submit([Task(f"q{i}") for i in range(80)])
            meter_ref.append(engine.provider_meters["p:sim-1"])
            await run.wait()
            assert run.metrics()["done"] == 80
            m = meter_ref[0]
            assert m.decreases >= 1
            assert m.limit == m.cap == 8.0  # climbed back

    arun(main)
    limits = [limit for limit, _ in seen]
    assert min(limits) < 8.0
    low = limits.index(min(limits))
    assert max(limits[low:]) == 8.0
