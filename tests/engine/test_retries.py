"""Retries: classes of errors, backoff, content faults, the run's budget, Retry-After."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from fanout import (
    CallableProvider,
    Completion,
    Engine,
    LimiterChanged,
    ProviderLimits,
    Request,
    RetryPolicy,
    Run,
    SimConfig,
    SimProvider,
    Task,
    TaskState,
)
from fanout.engine.shared import SharedAccount, account_id
from fanout.errors import (
    AuthError,
    BadRequest,
    ConnectionFailed,
    EmptyOutput,
    RateLimited,
    ServerError,
)

from .support import Recorder, arun

FAST = RetryPolicy(attempts=3, backoff_base_s=0.001, backoff_cap_s=0.01)


class Script:
    """A provider function answering from a per-prompt script, one step per attempt: an
    exception is raised, a Completion or a string returned as it is; past the end, "ok"."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.calls: list[tuple[str, int, float]] = []  # (prompt, attempt, loop time)
        self.failed_at: dict[tuple[str, int], float] = {}

    async def __call__(self, req: Request) -> str | Completion:
        name = req.messages[0]["content"]
        loop = asyncio.get_running_loop()
        self.requests.append(req)
        self.calls.append((name, req.attempt, loop.time()))
        await asyncio.sleep(0)
        steps = self.script.get(name, [])
        step = steps[req.attempt - 1] if req.attempt <= len(steps) else "ok"
        if isinstance(step, BaseException):
            self.failed_at[(name, req.attempt)] = loop.time()
            raise step
        if step == "ok":
            return f"{name} ok"
        return step

    def provider(self, name: str = "python") -> CallableProvider:
        return CallableProvider(self.__call__, name=name)

    def attempts(self, name: str) -> int:
        return sum(1 for r in self.requests if r.messages[0]["content"] == name)

    def sent(self, name: str) -> list[Request]:
        return [r for r in self.requests if r.messages[0]["content"] == name]


async def run_script(
    script: Script,
    tasks: list[Task],
    *,
    rec: Recorder | None = None,
    retry_budget: int | None = None,
    **engine_kw: Any,
) -> Run:
    engine_kw.setdefault("retry", FAST)
    async with Engine(providers=script.provider(), **engine_kw) as engine:
        run = engine.submit(tasks, retry_budget=retry_budget)
        if rec is not None:
            run.listen(rec)
        await run.wait()
        return run


def result(run: Run, key: str) -> Any:
    r = run.result(key)
    assert r is not None
    return r


def test_transient_errors_are_retried_with_jittered_exponential_backoff() -> None:
    script = Script({"a": [ServerError("500", status=500), ConnectionFailed("reset")]})
    rec = Recorder()

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a")], rec=rec)
        r = result(run, "a")
        assert r.state is TaskState.DONE
        assert r.attempts == 3
        m = run.metrics()
        assert m["retries"] == 2
        assert m["retries_by_kind"] == {"server_error": 1, "connection": 1}

    arun(main)
    retries = rec.retried()
    assert [e.attempt for e in retries] == [1, 2]
    for e in retries:  # full jitter: anywhere in [0, base * 2^(n-1)]
        assert 0.0 <= e.delay <= FAST.backoff_base_s * 2 ** (e.attempt - 1)
    assert [e.error.kind for e in retries] == ["server_error", "connection"]


def test_backoff_window_doubles_is_capped_and_respects_retry_after() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_cap_s=5.0)
    rng = random.Random(3)
    for retry, window in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 5.0), (9, 5.0)]:
        draws = [policy.backoff(retry, rng) for _ in range(300)]
        assert 0.0 <= min(draws) < 0.2 * window  # a window (full jitter), not a constant
        assert 0.8 * window < max(draws) <= window
    assert policy.backoff(1, rng, retry_after=7.5) == 7.5  # never shorter than Retry-After


def test_retry_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="attempts"):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError, match="budget"):
        RetryPolicy(budget=-1)
    assert RetryPolicy().budget_for(4) == 10  # at least 10
    assert RetryPolicy().budget_for(1000) == 500  # half the tasks
    assert RetryPolicy(budget=3).budget_for(1000) == 3


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (BadRequest("bad", status=400), "bad_request"),
        (AuthError("no key", status=401), "auth"),
        (RuntimeError("a bug in a callable"), "exception"),
    ],
)
def test_permanent_errors_fail_at_once(error: BaseException, kind: str) -> None:
    script = Script({"a": [error]})
    rec = Recorder()

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a"), Task("b", key="b")], rec=rec)
        r = result(run, "a")
        assert r.state is TaskState.FAILED
        assert r.attempts == 1
        assert r.error.kind == kind
        assert r.error.error_class == "permanent"
        assert result(run, "b").ok  # one failure does not disturb another task
        assert run.metrics()["failures_by_kind"] == {kind: 1}

    arun(main)
    assert script.attempts("a") == 1
    assert rec.retried() == []


def test_transient_errors_fail_after_the_last_attempt() -> None:
    script = Script({"a": [ServerError("500", status=500)] * 10})

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a", attempts=4)])
        r = result(run, "a")
        assert r.state is TaskState.FAILED
        assert r.attempts == 4
        assert r.error.kind == "server_error"
        assert r.error.status == 500

    arun(main)
    assert script.attempts("a") == 4


def test_truncated_output_is_retried_once_with_twice_the_tokens() -> None:
    cut = Completion(text="partial", finish_reason="length", output_tokens=50)
    script = Script({"once": [cut], "always": [cut, cut, cut]})

    async def main() -> None:
        run = await run_script(
            script, [Task("once", key="once", max_tokens=50), Task("always", key="always")]
        )
        once = result(run, "once")
        assert once.ok
        assert once.attempts == 2
        always = result(run, "always")
        assert always.state is TaskState.FAILED
        assert always.attempts == 2  # one content retry, though 3 attempts are allowed
        assert always.error.kind == "truncated"
        assert always.error.error_class == "content"

    arun(main)
    assert [r.max_tokens for r in script.sent("once")] == [50, 100]
    first, second = script.sent("always")
    assert second.max_tokens == 2 * first.max_tokens


def test_a_content_retry_counts_inside_attempts() -> None:
    script = Script({"a": [EmptyOutput("nothing")], "b": ["   "]})

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a", attempts=1), Task("b", key="b")])
        a = result(run, "a")
        assert a.state is TaskState.FAILED
        assert a.attempts == 1
        assert a.error.kind == "empty_output"
        b = result(run, "b")  # a blank answer is an empty one: retried once, then fine
        assert b.ok
        assert b.attempts == 2
        assert b.text == "b ok"

    arun(main)


def test_the_simulator_truncation_doubles_max_tokens_from_the_body() -> None:
    """The sim answers 30 tokens: 20 is cut, the retry with 40 fits; 8 and 16 are both cut."""
    sim = SimProvider(
        SimConfig(base_latency_s=0.001, jitter=0.0, min_output_tokens=30, max_output_tokens=30)
    )

    async def main() -> None:
        async with Engine(providers=sim, retry=FAST) as engine:
            body = {"messages": [{"role": "user", "content": "fits"}], "max_tokens": 20}
            run = await engine.run(
                [Task(body=body, key="fits"), Task("never", key="never", max_tokens=8)]
            )
            fits = result(run, "fits")
            assert fits.ok
            assert fits.attempts == 2
            assert fits.finish_reason == "stop"
            never = result(run, "never")
            assert never.state is TaskState.FAILED
            assert never.attempts == 2
            assert never.error.kind == "truncated"

    arun(main)
    assert sim.stats()["requests_total"] == 4


def test_invalid_json_is_retried_once_with_the_error_in_the_prompt() -> None:
    good = json.dumps({"score": 7})
    script = Script({"once": ["not json", good], "twice": ["{broken", "still not json"]})

    async def main() -> None:
        run = await run_script(
            script,
            [Task("once", key="once", output="json"), Task("twice", key="twice", output="json")],
        )
        once = result(run, "once")
        assert once.ok
        assert once.attempts == 2
        assert once.data == {"score": 7}
        twice = result(run, "twice")
        assert twice.state is TaskState.FAILED
        assert twice.attempts == 2
        assert twice.error.kind == "invalid_output"
        assert "not valid JSON" in twice.error.message

    arun(main)
    first, second = script.sent("once")
    assert first.json_mode
    assert len(first.messages) == 1
    assert len(second.messages) == 2
    assert "not valid JSON" in second.messages[-1]["content"]


def test_a_validator_failure_is_retried_with_its_message() -> None:
    script = Script({"a": ["too short", "a long enough answer"]})

    def at_least_three_words(text: str) -> str | None:
        return None if len(text.split()) >= 3 else "answer in at least three words"

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a", validate=at_least_three_words)])
        assert result(run, "a").ok
        assert result(run, "a").attempts == 2

    arun(main)
    assert "at least three words" in script.sent("a")[1].messages[-1]["content"]


def test_an_exhausted_retry_budget_fails_the_rest_without_retrying() -> None:
    always = [ServerError("500", status=500)] * 10
    script = Script({f"t{i}": always for i in range(6)})
    rec = Recorder()

    async def main() -> None:
        run = await run_script(
            script,
            [Task(f"t{i}", key=f"t{i}", attempts=5) for i in range(6)],
            rec=rec,
            retry_budget=3,
            concurrency=2,
        )
        assert all(t.state is TaskState.FAILED for t in run.tasks)
        assert run.retries == 3
        m = run.metrics()
        assert m["retries"] == 3
        assert m["retry_budget"] == 3
        assert m["attempts"] == 9

    arun(main)
    assert len(script.requests) == 6 + 3
    assert len(rec.retried()) == 3


def test_a_zero_budget_means_no_retry_at_all() -> None:
    script = Script({"a": [RateLimited("429", status=429)]})

    async def main() -> None:
        run = await run_script(script, [Task("a", key="a")], retry_budget=0)
        assert result(run, "a").state is TaskState.FAILED
        assert result(run, "a").error.kind == "rate_limited"

    arun(main)
    assert script.attempts("a") == 1


def test_retry_after_pauses_the_provider_model_and_the_wait_is_outside_the_slot() -> None:
    """One slot. A's first call gets a 429 asking for 0.2 s: C (same provider and model)
    must not start before that has passed; B (another provider) and D (same provider,
    another model) use the slot meanwhile; A's retry waits at least the 0.2 s too."""
    pause = 0.2
    p1 = Script({"A": [RateLimited("429", status=429, retry_after=pause)]})
    p2 = Script({})
    rec = Recorder()

    async def main() -> None:
        async with Engine(
            providers={"p1": p1.provider("p1"), "p2": p2.provider("p2")},
            concurrency=1,
            retry=FAST,
        ) as engine:
            run = engine.submit(
                [
                    Task("A", key="A", provider="p1", priority="urgent"),
                    Task("C", key="C", provider="p1", priority="high"),
                    Task("B", key="B", provider="p2", priority="urgent"),
                    Task("D", key="D", provider="p1", model="other", priority="urgent"),
                ]
            )
            run.listen(rec)
            await run.wait()
            assert all(t.state is TaskState.DONE for t in run.tasks)
            meter = engine.provider_meters["p1:sim-1"]
            failed = p1.failed_at[("A", 1)]
            assert meter.paused_until >= failed + pause
            assert engine.provider_meters["p1:other"].paused_until == 0.0

    arun(main)
    failed = p1.failed_at[("A", 1)]
    same_limiter = [(n, a, t) for n, a, t in p1.calls if n in ("A", "C")]
    assert same_limiter[0][:2] == ("A", 1)
    for name, attempt, t in same_limiter[1:]:
        assert t >= failed + pause, f"{name} attempt {attempt} started during the pause"
    # the slot was free during A's backoff; then A's retry (urgent) goes before C (high)
    assert rec.started() == ["A", "B", "D", "A", "C"]
    changed = rec.of(LimiterChanged)
    assert len(changed) == 1
    assert changed[0].key == "p1:sim-1"
    assert changed[0].paused_for == pause
    retry = rec.retried()[0]
    assert retry.delay >= pause


def test_a_429_naming_its_wait_costs_no_attempt_while_the_provider_admits_other_calls(
    tmp_path: Path,
) -> None:
    """Processes sharing an account (`accounts.db`): the budget was spent by the others
    each time 甲's call came (eight 429s in a row, each naming a short wait), while this
    process's other calls were admitted. The 429s are a pacing signal, not the task's
    fault: they cost it no attempt and the run no retry budget, and it ends done (it used
    to fail after its three attempts, as one task of 423 did in
    tests/e2e/test_shared_account.py). Without a shared account every 429 is an attempt
    (`tests/engine/test_invariants.py`)."""
    lost = [RateLimited("429", status=429, retry_after=0.001)] * 8
    script = Script({"甲": lost})
    account = SharedAccount(tmp_path / "accounts.db", account_id("openai", None, "sk-共享"))

    async def main() -> None:
        tasks = [Task("乙0", key="乙0", priority="urgent"), Task("甲", key="甲")]
        tasks += [Task(f"乙{i}", key=f"乙{i}") for i in range(1, 4)]
        limits = {"python": ProviderLimits(account=account)}
        run = await run_script(script, tasks, concurrency=1, retry_budget=2, limits=limits)
        r = result(run, "甲")
        assert r.state is TaskState.DONE, r.error
        assert r.attempts == 9
        assert run.retries == 0
        assert all(t.state is TaskState.DONE for t in run.tasks)

    arun(main)
    assert script.attempts("甲") == 9


def test_a_429_that_never_ends_costs_attempts_after_its_free_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request the shared account never admits (larger than its token budget, say) while
    the others get through: its 429s are free only up to `MAX_FREE_429S`, then count as
    attempts, and it fails after its three instead of pausing the provider 200 times. (The
    cap is made small and the progress window long, so the test counts, not times.)"""
    from fanout.engine import workers

    monkeypatch.setattr(workers, "MAX_FREE_429S", 5)
    monkeypatch.setattr(workers, "RATE_PROGRESS_S", 1e9)
    script = Script({"甲": [RateLimited("429", status=429, retry_after=0.001)] * 100})
    account = SharedAccount(tmp_path / "accounts.db", account_id("openai", None, "sk-共享"))

    async def main() -> None:
        tasks = [Task("乙0", key="乙0", priority="urgent"), Task("甲", key="甲")]
        limits = {"python": ProviderLimits(account=account)}
        run = await run_script(script, tasks, concurrency=1, limits=limits)
        assert result(run, "甲").state is TaskState.FAILED
        assert result(run, "乙0").state is TaskState.DONE

    arun(main)
    assert script.attempts("甲") == 5 + 3


def test_429s_cost_attempts_when_the_provider_admits_none_of_our_calls(tmp_path: Path) -> None:
    """No call of ours admitted lately (a key whose quota is gone answers 429 to all): a
    429 counts as an attempt as before, and the task fails after its three."""
    script = Script({"甲": [RateLimited("429", status=429, retry_after=0.001)] * 10})
    account = SharedAccount(tmp_path / "accounts.db", account_id("openai", None, "sk-共享"))

    async def main() -> None:
        limits = {"python": ProviderLimits(account=account)}
        run = await run_script(script, [Task("甲", key="甲")], limits=limits)
        r = result(run, "甲")
        assert r.state is TaskState.FAILED
        assert r.attempts == 3
        assert r.error.kind == "rate_limited"

    arun(main)
    assert script.attempts("甲") == 3


@pytest.mark.parametrize("lean", [None, ()], ids=["full", "lean"])
def test_a_resume_counts_the_429s_that_cost_nothing_as_the_run_did(
    tmp_path: Path, lean: tuple[str, ...] | None
) -> None:
    """甲 met five 429s naming their wait while 乙's call got through (free: no attempt, no
    retry budget), then was interrupted on its sixth call. Resumed, those five still cost
    nothing: one 500 is its second charged attempt of three and is retried (counted as
    charged, the resumed task failed at once and the run's budget held five retries)."""
    from fanout import SqliteStore

    path = tmp_path / "运行.db"
    account = SharedAccount(tmp_path / "accounts.db", account_id("openai", None, "sk-共享"))
    limits = {"python": ProviderLimits(account=account)}
    stuck = asyncio.Event()

    async def first(req: Request) -> str:
        name = req.messages[0]["content"]
        if name == "甲":
            if req.attempt <= 5:
                raise RateLimited("429", status=429, retry_after=0.001)
            stuck.set()
            await asyncio.Event().wait()  # in flight until the interrupt
        return f"{name} ok"

    later: list[int] = []  # the attempt numbers of 甲's calls after the resume

    async def second(req: Request) -> str:
        name = req.messages[0]["content"]
        if name == "甲":
            later.append(req.attempt)
            if len(later) == 1:
                raise ServerError("500", status=500)
        return f"{name} ok"

    async def main() -> None:
        tasks = [Task("乙", key="乙", priority="urgent"), Task("甲", key="甲")]
        async with Engine(
            providers=CallableProvider(first, name="python"),
            store=SqliteStore(path),
            concurrency=1,
            retry=FAST,
            limits=limits,
        ) as engine:
            run = engine.submit(tasks)
            await asyncio.wait_for(stuck.wait(), 30)
            assert run.retries == 0
            run.interrupt(0)
            await run.wait()
            run_id = run.id
        async with Engine(
            providers=CallableProvider(second, name="python"),
            store=SqliteStore(path),
            retry=FAST,
            limits=limits,
        ) as engine:
            resumed = await engine.resume(run_id, lean=lean)
            await resumed.wait()
            r = result(resumed, "甲")
            assert r.state is TaskState.DONE, r.error
            assert resumed.retries == 1  # the 500 only

    arun(main)
    assert later == [7, 8]  # numbered on after the six; the 500, then its answer
