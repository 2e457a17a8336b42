"""The provider meter's learned request rate: after a 429 that reopens within about one call,
calls are spaced at the rate the provider was admitting them, so a Retry-After pause does not
end in a stampede of new 429s; long pauses teach nothing."""

from __future__ import annotations

import time

import pytest

from fanout import Engine, ProviderLimits, RetryPolicy, SimConfig, SimProvider, Task
from fanout.engine.limits import (
    OK,
    RATE_DECREASE_FACTOR,
    RATE_INCREASE,
    RATE_LIMITED,
    RATE_MIN_SAMPLES,
    RATE_PROBE,
    RATE_PROBE_MAX,
    RATE_SLOW_START,
    RATE_START_MIN,
    RATE_WINDOW_S,
    ProviderMeter,
)
from tests.engine.support import arun, overflow


def meter(adaptive: bool = True) -> ProviderMeter:
    return ProviderMeter("p:m", ProviderLimits(adaptive=adaptive), default_cap=1000)


def succeed(m: ProviderMeter, times: list[float]) -> None:
    t = Task("x")
    for now in times:
        m.started(now, t)
        m.finished(now, t, OK, 1)


def test_a_short_retry_after_paces_calls_at_the_admitted_rate() -> None:
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])  # 20 calls/s for 2 s
    assert m.pace_rate is None
    t = Task("x")
    m.started(12.0, t)
    m.finished(12.0, t, RATE_LIMITED, 0)
    m.pause(12.0, 0.05)  # one 429 amid successes: it may be noise
    assert m.pace_rate is None
    overflow(m, 12.0)  # most calls rejected now
    m.pause(12.0, 0.05)  # the next slot opens in one call's time: a rate limit
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * 20, rel=0.1)
    rate = m.pace_rate
    assert m.wait_time(12.0, t) == pytest.approx(0.05)  # the pause
    m.started(12.05, t)  # the pacer spaces the next ones
    assert m.wait_time(12.05, t) == pytest.approx(1 / rate)
    m.pause(12.5, 0.05)  # within the cooldown: the same burst of 429s
    assert m.pace_rate == rate
    assert m.rate_cuts == 1


def test_the_rate_climbs_fast_to_what_was_admitted_then_slowly() -> None:
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])
    overflow(m, 12.0)
    m.pause(12.0, 0.05)
    rate = m.pace_rate
    assert rate is not None
    ceiling = rate / RATE_DECREASE_FACTOR
    steps = []
    for i in range(40):
        before = m.pace_rate
        succeed(m, [12.1 + i * 0.05])
        assert m.pace_rate is not None
        assert before is not None
        steps.append(round(m.pace_rate - before, 9))
    fast = [s for s in steps if s == RATE_INCREASE]
    probe = steps[len(fast) :]
    assert fast
    assert probe
    assert steps[: len(fast)] == fast
    assert all(RATE_PROBE <= s < RATE_INCREASE for s in probe)  # ...then slowly above it
    assert probe == sorted(probe)
    assert probe[-1] > probe[0]
    assert m.pace_rate > ceiling


def test_the_probe_finds_capacity_freed_by_another_client_within_seconds() -> None:
    """At the learned rate the probe is slow, but its step grows while no 429 comes: a
    provider that admits twice as much (another client stopped) is found within seconds."""
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])  # 20 calls/s for 2 s
    overflow(m, 12.0)
    m.pause(12.0, 0.05)
    start = m.pace_rate
    assert start is not None
    now = 12.0
    while m.pace_rate < 2 * start and now < 60.0:  # answers come at the pace, none refused
        now += 1.0 / m.pace_rate
        succeed(m, [now])
    assert m.pace_rate >= 2 * start
    assert now - 12.0 < 12.0, f"doubled only after {now - 12.0:.1f}s"
    assert RATE_PROBE_MAX * RATE_PROBE < RATE_INCREASE


def test_at_the_start_of_a_run_the_short_first_count_is_made_up_for_by_slow_start() -> None:
    m = meter()
    succeed(m, [10.0 + i / 200 for i in range(10)])  # the first 10 answers, within 50 ms
    overflow(m, 10.05)
    m.pause(10.05, 0.05)
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * 10)  # 10 in a 1 s window
    succeed(m, [10.1, 10.2])
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * 10 + 2 * RATE_SLOW_START)


def test_only_a_call_sent_after_the_last_cut_can_cut_again() -> None:
    m = meter()
    succeed(m, [10.0 + i / 200 for i in range(10)])
    early, late = Task("early"), Task("late")
    m.started(10.04, early)  # in flight when the first 429 cuts
    overflow(m, 10.05)
    m.pause(10.05, 0.05)  # the first cut, from a short window: slow start
    first = m.pace_rate
    assert first is not None
    m.finished(10.06, early, RATE_LIMITED, 0)
    m.pause(10.06, 0.05)  # stale: sent before the cut
    assert m.pace_rate == first
    assert m.rate_cuts == 1
    m.started(10.1, late)
    m.finished(10.11, late, RATE_LIMITED, 0)
    m.pause(10.11, 0.05)  # sent at the new pace and rejected: slow start is over
    assert m.rate_cuts == 2
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * first)
    assert m.pace_rate is not None
    before = m.pace_rate
    succeed(m, [10.2])
    assert m.pace_rate - before == pytest.approx(RATE_INCREASE)  # no slow start: 0.1 a call


@pytest.mark.parametrize("pause_s", [1.0, 5.0])
def test_a_long_retry_after_teaches_no_rate(pause_s: float) -> None:
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])
    # "come back in a second": overload, not a request budget
    assert m.pause(12.0, pause_s, rate_limited=False)
    assert m.pace_rate is None
    assert m.wait_time(12.0, Task("x")) == pytest.approx(pause_s)


def test_a_stray_429_amid_successes_holds_back_nobody_but_most_calls_rejected_pause_all() -> None:
    """Noise (a provider that rejects a few calls at random) must not stop the others: only
    when most calls that ended lately were 429s does a long Retry-After pause every call."""
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])
    t = Task("x")
    m.started(12.0, t)
    m.finished(12.0, t, RATE_LIMITED, 0)
    assert not m.pause(12.0, 1.0)
    assert m.wait_time(12.0, t) == 0.0
    assert m.pace_rate is None
    for k in range(30):  # now most calls are rejected: the provider means it
        m.started(12.1 + k / 100, t)
        m.finished(12.1 + k / 100, t, RATE_LIMITED, 0)
    assert m.pause(12.5, 1.0)
    assert m.wait_time(12.5, t) == pytest.approx(1.0)
    assert m.pace_rate is None  # a long wait still teaches no rate


def test_a_429_far_below_the_learned_rate_is_noise_and_teaches_no_lower_rate() -> None:
    m = meter()
    succeed(m, [10.0 + i / 20 for i in range(40)])  # 20 calls/s admitted
    overflow(m, 12.0)
    m.pause(12.0, 0.05)  # a short wait: the edge of a budget of about 20/s
    learned = m.pace_rate
    assert learned is not None
    assert m.rate_cuts == 1
    succeed(m, [20.0 + i / 5 for i in range(20)])  # later, only 5 calls/s go out
    m.pause(24.0, 0.3)  # a 429 about one call long, at a quarter of the known limit
    assert m.rate_cuts == 1  # noise: the pace is not cut
    assert m.pace_rate is not None
    assert m.pace_rate >= learned


def test_too_few_successes_measure_no_rate_and_slow_rates_are_measured_over_more_time() -> None:
    m = meter()
    succeed(m, [10.0 + i for i in range(RATE_MIN_SAMPLES - 1)])  # one call a second
    overflow(m, 17.0)
    m.pause(17.0, 0.5)
    # nothing measured: a guess (the calls in flight, here none, a window) in slow start
    assert m.pace_rate == RATE_START_MIN
    succeed(m, [17.0])
    m.pause(17.0, 0.5)  # now 8 calls over 7 s
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * (RATE_MIN_SAMPLES - 1) / 7.0)


def test_a_429_before_any_answer_paces_at_once_rather_than_stampede() -> None:
    """Sixteen calls sent at once meet a budget smaller than that: the first 429 comes
    before any success could measure the rate. Every queued call must not go out again
    when its wait ends (all but one would be rejected anew, four processes without rate
    headers lost most tasks so): the meter paces at the calls in flight per window, and
    a call sent at that pace and rejected again cuts it to what the few successes show."""
    m = meter()
    tasks = [Task(f"t{i}") for i in range(32)]
    for t in tasks:
        m.started(10.0, t)
    for t in tasks[16:]:  # half of them rejected at once
        m.finished(10.01, t, RATE_LIMITED, 0)
    assert m.pause(10.01, 0.05)
    assert m.pace_rate == pytest.approx(17 / RATE_WINDOW_S)  # 16 in flight, and the next
    first = m.pace_rate
    x = Task("x")
    assert m.wait_time(10.01, x) == pytest.approx(0.05)  # the wait named, then paced
    m.started(10.06, x)
    assert m.wait_time(10.06, x) == pytest.approx(1 / first)
    for i, t in enumerate(tasks[1:4]):  # three admitted, answered over a second
        m.finished(10.5 + i / 4, t, OK, 1)
    assert m.admitted_rate(11.2) is None  # too few to measure
    m.finished(11.2, x, RATE_LIMITED, 0)  # sent at the pace, rejected
    m.pause(11.2, 0.05)
    rough = 2 / RATE_WINDOW_S  # three successes over half a second: two intervals, a window
    assert m.pace_rate == pytest.approx(RATE_DECREASE_FACTOR * rough)
    assert m.rate_cuts == 2


def test_noise_429s_with_a_short_retry_after_teach_no_rate() -> None:
    """An overloaded provider rejects one call in seven at random, each 429 naming a wait of
    10 ms: about one call's time at the rate admitted, as at a budget's edge. Amid successes
    it is noise: no pace is started or cut, however long it goes on (a guessed pace that it
    cut held a provider admitting 500 calls/s to 5)."""
    m = meter()
    t = Task("x")
    now = 10.0
    for i in range(400):  # 20 calls/s for 20 s
        now = 10.0 + i / 20
        m.wait_time(now, t)
        m.started(now, t)
        if i % 7 == 3:
            m.finished(now, t, RATE_LIMITED, 0)
            m.pause(now, 0.01)
        else:
            m.finished(now, t, OK, 1)
        assert m.pace_rate is None, f"a pace was learned from noise at {now:.2f}s"
    assert m.rate_cuts == 0
    overflow(m, now)  # a budget met for real still teaches
    m.pause(now, 0.01)
    assert m.pace_rate is not None


def test_a_guessed_pace_climbs_and_is_dropped_once_it_holds_nothing_back() -> None:
    """The first calls overflowed a budget before any rate was measured: a guessed pace, in
    slow start. It grows with each success, and once it held no call back for a window (the
    provider admits all there is to send) it is dropped, not kept as a limit: a later 429
    amid successes is noise again."""
    m = meter()
    tasks = [Task(f"t{i}") for i in range(4)]
    for t in tasks:
        m.started(10.0, t)
    overflow(m, 10.01)
    m.pause(10.01, 0.01)
    first = m.pace_rate
    assert first is not None
    x = Task("x")
    m.started(10.02, Task("y"))
    assert m.wait_time(10.03, x) > 0.0  # the guess holds calls back
    succeed(m, [10.2, 10.3])
    assert m.pace_rate == pytest.approx(first + 2 * RATE_SLOW_START)
    now = 10.3
    while now < 13.0:  # calls go out slower than the pace, all admitted
        now += 0.1 + 2.0 / m.pace_rate if m.pace_rate else 0.1
        assert m.wait_time(now, x) == 0.0
        succeed(m, [now])
        if m.pace_rate is None:
            break
    assert m.pace_rate is None, "a guess that held nothing back was kept"
    assert now - 10.01 < 2.5
    m.started(now, x)
    m.finished(now, x, RATE_LIMITED, 0)
    m.pause(now, 0.01)
    assert m.pace_rate is None
    assert m.wait_time(now + 0.02, x) == 0.0


def run_fast_provider(faults: dict[str, float], tasks: int = 60) -> tuple[float, ProviderMeter]:
    """`tasks` calls of 10 ms at concurrency 5 on the in-process simulator (its 429s name a
    10 ms wait); the wall time of the run and the provider's meter."""
    sim = SimConfig(
        base_latency_s=0.01, jitter=0.3, per_token_s=0.0, faults=faults, retry_after_s=0.01, seed=7
    )

    async def main() -> tuple[float, ProviderMeter]:
        async with Engine(
            providers=SimProvider(sim),
            concurrency=5,
            retry=RetryPolicy(attempts=6, backoff_base_s=0.005, backoff_cap_s=0.02, budget=1000),
        ) as engine:
            t0 = time.perf_counter()
            run = await engine.run([Task(f"总结第{i}章") for i in range(tasks)])
            wall = time.perf_counter() - t0
            assert run.metrics()["done"] == tasks
            return wall, engine.provider_meters["sim:sim-1"]

    return arun(main)


def test_noise_429s_cost_a_fast_provider_their_retries_not_a_learned_pace() -> None:
    """The same run with and without 15 % random 429s (10 ms answers, Retry-After 10 ms):
    the faults cost about their retries (1.5-1.8 times the wall), not a pace learned from
    them (a pace cut while it paced made it 50 times at 26 tasks, 380 times at 200)."""
    clean, _ = run_fast_provider({})
    noisy, m = run_fast_provider({"429": 0.15})
    assert m.rate_cuts == 0
    assert m.pace_rate is None
    assert noisy < 4.0 * clean, f"{noisy / clean:.1f} times the run without faults"


def test_a_meter_that_is_not_adaptive_learns_nothing() -> None:
    m = meter(adaptive=False)
    succeed(m, [10.0 + i / 20 for i in range(40)])
    m.pause(12.0, 0.05)
    assert m.pace_rate is None


def test_no_stampede_after_retry_after_pauses_in_the_engine() -> None:
    """The in-process simulator enforcing 3,000 RPM (bursts of 50), no limit on our side, 16
    calls of 1 ms at a time: without the learned rate nearly every call is a 429."""
    provider = SimProvider(SimConfig(rpm=3000, base_latency_s=0.001, jitter=0.0))

    async def main() -> None:
        async with Engine(
            providers=provider,
            concurrency=16,
            retry=RetryPolicy(attempts=10, budget=10_000),
        ) as engine:
            run = await engine.run([Task(f"question {i}") for i in range(150)])
            assert run.metrics()["done"] == 150
            assert engine.provider_meters["sim:sim-1"].pace_rate is not None

    arun(main)
    stats = provider.stats()
    assert stats["completed_total"] == 150
    assert stats["rejected_429"] < 40  # the first burst's overflow, then hardly any
