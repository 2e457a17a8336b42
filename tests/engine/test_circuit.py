"""Outages: a provider that cannot be reached opens its circuit instead of burning attempts.

The unit tests drive `Circuit` and `ProviderMeter` with explicit times; the engine tests use a
provider whose outage the test switches on and off, and count what was sent while it was down.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from fanout import CallableProvider, Engine, Request, RetryPolicy, Task, TaskState
from fanout.engine.events import ProviderDown, ProviderUp
from fanout.engine.limits import (
    CIRCUIT_FAILURES,
    CIRCUIT_PROBE_BASE_S,
    CIRCUIT_PROBE_CAP_S,
    DOWN,
    ERROR,
    INF,
    NEUTRAL,
    OK,
    OVERLOADED,
    RATE_LIMITED,
    UNREACHABLE_PROBES,
    Circuit,
)
from fanout.errors import ConnectionFailed, ServerError

from .support import Recorder, arun, until


def fail(c: Circuit, now: float, n: int, outcome: str = DOWN) -> None:
    for i in range(n):
        t = Task(f"x{i}")
        c.started(t)
        c.finished(now, t, outcome, now)


def test_failures_in_a_row_open_it_and_an_answer_in_between_resets_the_count() -> None:
    c = Circuit(seed=1)
    fail(c, 0.0, CIRCUIT_FAILURES - 1)
    t = Task("ok")
    c.finished(0.0, t, ERROR, 0.0)  # a 400 is an answer: the provider is up
    fail(c, 0.0, CIRCUIT_FAILURES - 1)
    assert c.down_since is None
    c.finished(0.0, Task("429"), RATE_LIMITED, 0.0)  # a 429 too
    fail(c, 0.0, CIRCUIT_FAILURES - 1)
    c.finished(0.0, Task("x"), NEUTRAL, 0.0)  # a cancelled call says nothing either way
    c.finished(0.5, Task("old"), OK, -1.0)  # an answer to a call sent before the row began
    fail(c, 1.0, 1)
    assert c.down_since == 1.0


def test_one_probe_at_a_time_on_a_doubling_capped_schedule_and_an_answer_closes_it() -> None:
    c = Circuit(seed=2)
    c.answered = True
    fail(c, 10.0, CIRCUIT_FAILURES)
    assert c.down_since == 10.0
    now = 10.0
    waits = []
    for k in range(8):
        w = c.wait_time(now)
        window = min(CIRCUIT_PROBE_CAP_S, CIRCUIT_PROBE_BASE_S * 2.0**k)
        assert window / 2 <= w <= window  # jitter within [window/2, window]
        waits.append(w)
        now += w
        assert c.wait_time(now) == 0.0
        probe = Task(f"probe{k}")
        c.started(probe)
        assert c.wait_time(now) == INF  # nothing else while the probe is out
        c.started(Task("other"))  # (a call let through before: not the probe)
        c.finished(now + 0.01, probe, DOWN, now)
        now += 0.01
    assert c.probes == 8
    assert not c.unreachable
    assert max(waits) <= CIRCUIT_PROBE_CAP_S
    probe = Task("last")
    now += c.wait_time(now)
    c.started(probe)
    assert c.finished(now, probe, OK, now)  # closed
    assert c.down_since is None
    assert c.wait_time(now) == 0.0


def test_a_provider_that_never_answered_is_unreachable_after_a_few_probes() -> None:
    c = Circuit(seed=3)
    fail(c, 0.0, CIRCUIT_FAILURES)
    now = 0.0
    for k in range(UNREACHABLE_PROBES):
        assert not c.unreachable
        now += c.wait_time(now)
        probe = Task(f"p{k}")
        c.started(probe)
        c.finished(now, probe, DOWN, now)
    assert c.unreachable
    assert c.wait_time(now) == 0.0  # its calls go through, to fail at once


def outage_provider(state: dict[str, bool], sent: list[tuple[float, bool]]) -> CallableProvider:
    async def call(req: Request) -> str:
        sent.append((time.monotonic(), state["down"]))
        if state["down"]:
            raise ConnectionFailed("sim: cannot connect to 127.0.0.1:9: is the server running?")
        await asyncio.sleep(0.005)
        return "ok"

    return CallableProvider(call, name="p")


def test_an_outage_fails_no_task_costs_no_budget_and_sends_little_while_down() -> None:
    """A run with the default retry policy: the provider goes away for a while mid-run and
    comes back. Every task ends done; while it was down the engine sent at most the calls
    already in flight plus its probes; the retry budget is untouched; events say when."""
    state = {"down": False}
    sent: list[tuple[float, bool]] = []
    rec = Recorder()
    concurrency = 8

    async def main() -> None:
        async with Engine(
            providers=outage_provider(state, sent), concurrency=concurrency, retry=RetryPolicy()
        ) as engine:
            run = engine.submit([Task(f"q{i}") for i in range(400)])
            run.listen(rec)
            await until(lambda: run.finished >= 100)
            state["down"] = True
            await until(lambda: bool(rec.of(ProviderDown)))
            await asyncio.sleep(2.5)  # a few probes' worth
            state["down"] = False
            await run.wait()
            assert run.retries == 0  # no call that never reached the provider was charged
            assert all(t.state is TaskState.DONE for t in run.tasks)
            assert all(t.tries - t.free_tries == 1 for t in run.tasks)

    arun(main)
    while_down = sum(1 for _, down in sent if down)
    opened = rec.of(ProviderDown)[0].since
    probes = [t for t, down in sent if down and t > opened]
    # the row that opened it (with those in flight then), then ~5 probes in 2.5 s
    assert while_down <= CIRCUIT_FAILURES + concurrency + 6
    assert 1 <= len(probes) <= 6
    assert len(rec.of(ProviderDown)) == 1
    assert len(rec.of(ProviderUp)) == 1
    assert rec.of(ProviderUp)[0].down_s >= 2.0


def test_a_provider_that_cannot_be_reached_at_all_fails_fast_with_one_message() -> None:
    calls: list[float] = []

    async def refused(req: Request) -> str:
        calls.append(time.monotonic())
        raise ConnectionFailed("p: cannot connect to 127.0.0.1:1: is the server running?")

    async def main() -> None:
        async with Engine(providers=CallableProvider(refused, name="p"), concurrency=4) as e:
            t0 = time.monotonic()
            run = await e.run([Task(f"q{i}") for i in range(50)])
            took = time.monotonic() - t0
            assert all(t.state is TaskState.FAILED for t in run.tasks)
            errors = {r.error.message for r in await run.results() if r.error is not None}
            assert len(errors) <= 2
            assert any("could not be reached" in m and "is the server running" in m for m in errors)
            assert took < 30.0  # probes 0.5 + 1 + 2 s (jittered), not 50 tasks x 3 attempts

    arun(main)
    # a row of failures opens the circuit (plus those in flight then), then the probes
    assert len(calls) <= CIRCUIT_FAILURES + 4 + UNREACHABLE_PROBES


@pytest.mark.parametrize("kind", ["server_error"])
def test_random_5xx_do_not_open_the_circuit(kind: str) -> None:
    """5 % of calls failing at random is not an outage: the circuit stays closed."""
    n = {"i": 0}

    async def flaky(req: Request) -> str:
        n["i"] += 1
        if n["i"] % 20 == 0:
            raise ServerError("p: 500", status=500)
        return "ok"

    rec = Recorder()

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(flaky, name="p"),
            concurrency=8,
            retry=RetryPolicy(backoff_base_s=0.001),
        ) as e:
            run = e.submit([Task(f"q{i}") for i in range(500)])
            run.listen(rec)
            await run.wait()
            assert run.metrics()["done"] == 500

    arun(main)
    assert rec.of(ProviderDown) == []


def test_a_probe_that_never_went_out_hands_the_turn_to_the_next_call() -> None:
    """A probe picked but not sent (cancelled, interrupted, over its run's cap) ends
    NEUTRAL: the circuit must not wait for its answer forever."""
    c = Circuit(seed=4)
    fail(c, 0.0, CIRCUIT_FAILURES)
    now = c.wait_time(0.0)
    probe = Task("probe")
    c.started(probe)
    assert c.wait_time(now) == INF
    c.finished(now, probe, NEUTRAL, now)
    assert c.wait_time(now) == 0.0
    assert c.down_since is not None  # still down: nothing was learned


def test_a_probe_overtaken_by_an_answer_does_not_hold_the_next_outage_shut() -> None:
    """The circuit opens while a call sent after the failures began is still out; a probe
    goes out; that call answers first and closes the circuit. The probe's own answer, or its
    absence, must not leave the circuit waiting for it at the next outage."""
    c = Circuit(seed=5)
    c.answered = True
    fail(c, 1.0, CIRCUIT_FAILURES)
    late = Task("sent after the row began")
    now = 1.0 + c.wait_time(1.0)
    probe = Task("probe")
    c.started(probe)
    assert c.finished(now, late, OK, 1.5)  # closed by the other answer
    assert c.wait_time(now) == 0.0
    fail(c, now + 1, CIRCUIT_FAILURES)  # the next outage: the probe never came back
    assert c.down_since is not None
    assert c.wait_time(now + 1) < INF  # a new probe may go out


def test_a_provider_that_answers_429_or_529_is_never_unreachable() -> None:
    c = Circuit(seed=6)
    fail(c, 0.0, CIRCUIT_FAILURES, OVERLOADED)
    assert c.down_since == 0.0
    now = 0.0
    for k in range(UNREACHABLE_PROBES + 2):
        now += c.wait_time(now)
        probe = Task(f"p{k}")
        c.started(probe)
        c.finished(now, probe, OVERLOADED, now)
    assert not c.unreachable  # it answers, if only to say it is busy: it is probed on
    assert c.wait_time(now) > 0.0
