"""Scheduler invariants over random plans (hypothesis).

Random DAGs (each task depends on some earlier ones), agents in lanes with limits, per-agent
limits, two providers with concurrency caps, priorities and a fault plan per (task, attempt).
The providers are instrumented: they count calls in flight per lane, agent and provider and
check, at every call, that the task's dependencies have already finished. A synchronous
listener records every event. An oracle derived from the plan says how each task must end.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fanout import (
    CallableProvider,
    Completion,
    Engine,
    ProviderLimits,
    Request,
    RetryPolicy,
    Task,
    TaskFinished,
    TaskStarted,
    TaskState,
)
from fanout.errors import BadRequest, RateLimited, ServerError

from .support import Recorder, arun

OUTCOMES = ("ok", "429", "500", "400", "empty", "trunc", "exc")
TRANSIENT = {"429", "500"}
CONTENT = {"empty", "trunc"}
KIND = {
    "429": "rate_limited",
    "500": "server_error",
    "400": "bad_request",
    "empty": "empty_output",
    "trunc": "truncated",
    "exc": "exception",
}
AGENTS = ("a", "b", "c", "d")
AGENT_LANES = {"a": "x", "b": "x", "c": "y"}  # "d" is in the default lane
POLICY_ATTEMPTS = 3
# 200 examples (CI=true) are tens of seconds idle, minutes on a loaded machine
pytestmark = pytest.mark.timeout(600)
# how many examples: the profile's (tests/conftest.py: 40 by default, 200 under CI=true)
SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@dataclass
class Spec:
    key: str
    deps: list[int]
    agent: str
    priority: int
    provider: str
    on_fail: str
    attempts: int | None
    plan: list[str]
    sleep_ms: list[int]

    @property
    def lane(self) -> str:
        return AGENT_LANES.get(self.agent, "default")

    @property
    def max_attempts(self) -> int:
        return self.attempts if self.attempts is not None else POLICY_ATTEMPTS

    def outcome(self, attempt: int) -> str:
        return self.plan[attempt - 1] if attempt <= len(self.plan) else "ok"


@dataclass
class Plan:
    specs: list[Spec]
    concurrency: int
    lanes: dict[str, int]
    agent_limits: dict[str, int]
    caps: dict[str, int | None]
    budget: int | None
    retry_after: float | None


@st.composite
def specs(draw: st.DrawFn, i: int, *, providers: tuple[str, ...]) -> Spec:
    deps = sorted(draw(st.sets(st.integers(0, i - 1), max_size=3))) if i else []
    n_plan = draw(st.integers(0, 3))
    return Spec(
        key=f"t{i}",
        deps=deps,
        agent=draw(st.sampled_from(AGENTS)),
        priority=draw(st.integers(0, 3)),
        provider=draw(st.sampled_from(providers)),
        on_fail=draw(st.sampled_from(("skip", "run"))),
        attempts=draw(st.sampled_from((None, 1, 2, 3, 4))),
        plan=draw(st.lists(st.sampled_from(OUTCOMES), min_size=n_plan, max_size=n_plan)),
        sleep_ms=draw(st.lists(st.integers(0, 3), min_size=1, max_size=3)),
    )


@st.composite
def plans(draw: st.DrawFn, *, single: bool = False) -> Plan:
    providers = ("p1",) if single else ("p1", "p2")
    n = draw(st.integers(1, 14))
    tasks = [draw(specs(i, providers=providers)) for i in range(n)]
    if single:
        return Plan(tasks, 1, {}, {}, {"p1": None}, draw(st.sampled_from((None, 2))), None)
    return Plan(
        specs=tasks,
        concurrency=draw(st.integers(1, 5)),
        lanes={"x": draw(st.integers(1, 3)), "y": draw(st.integers(1, 3))},
        agent_limits=draw(st.dictionaries(st.sampled_from(("a", "c", "d")), st.integers(1, 2))),
        caps={"p1": draw(st.integers(1, 3)), "p2": draw(st.none() | st.integers(1, 4))},
        budget=draw(st.none() | st.integers(0, 6)),
        retry_after=draw(st.sampled_from((None, 0.002))),
    )


@dataclass
class Tracker:
    """What the instrumented providers saw."""

    plan: Plan
    by_key: dict[str, Spec]
    finished: set[str] = field(default_factory=set)
    calls: dict[str, list[int]] = field(default_factory=dict)
    max_tokens: dict[str, list[int]] = field(default_factory=dict)
    inflight: Counter[str] = field(default_factory=Counter)
    peak: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)

    def listener(self, ev: object) -> None:
        if isinstance(ev, TaskFinished):
            self.finished.add(ev.task.key)

    def limits(self, spec: Spec) -> dict[str, int | None]:
        p = self.plan
        return {
            "all": p.concurrency,
            f"lane:{spec.lane}": p.lanes.get(spec.lane),
            f"agent:{spec.agent}": p.agent_limits.get(spec.agent),
            f"provider:{spec.provider}": p.caps[spec.provider],
        }

    async def call(self, pname: str, req: Request) -> str | Completion:
        key = req.prompt_text().split("\n", 1)[0]
        spec = self.by_key[key]
        if pname != spec.provider:
            self.violations.append(f"{key} sent to {pname}, not {spec.provider}")
        for d in spec.deps:
            dep = f"t{d}"
            if dep not in self.finished:
                self.violations.append(f"{key} called before its dependency {dep} finished")
        self.calls.setdefault(key, []).append(req.attempt)
        self.max_tokens.setdefault(key, []).append(req.max_tokens)
        limits = self.limits(spec)
        for name, lim in limits.items():
            self.inflight[name] += 1
            self.peak[name] = max(self.peak[name], self.inflight[name])
            if lim is not None and self.inflight[name] > lim:
                self.violations.append(f"{self.inflight[name]} in flight for {name} (limit {lim})")
        try:
            ms = spec.sleep_ms[(req.attempt - 1) % len(spec.sleep_ms)]
            await asyncio.sleep(ms / 1000)
        finally:
            for name in limits:
                self.inflight[name] -= 1
        outcome = spec.outcome(req.attempt)
        if outcome == "429":
            raise RateLimited("429", status=429, retry_after=self.plan.retry_after)
        if outcome == "500":
            raise ServerError("500", status=500)
        if outcome == "400":
            raise BadRequest("400", status=400)
        if outcome == "exc":
            raise RuntimeError("a bug in the agent")
        if outcome == "empty":
            return "  "
        if outcome == "trunc":
            return Completion(text="cut", finish_reason="length", output_tokens=1)
        return f"{key} ok"


def provider(tracker: Tracker, pname: str) -> CallableProvider:
    async def call(req: Request) -> str | Completion:
        return await tracker.call(pname, req)

    return CallableProvider(call, name=pname)


def oracle(spec: Spec) -> tuple[int, TaskState, str | None]:
    """(attempts, final state, failure kind) for a task that runs, with an unlimited budget."""
    content_used = False
    for attempt in range(1, spec.max_attempts + 1):
        o = spec.outcome(attempt)
        if o == "ok":
            return attempt, TaskState.DONE, None
        last = attempt == spec.max_attempts
        if o in TRANSIENT and not last:
            continue
        if o in CONTENT and not last and not content_used:
            content_used = True
            continue
        return attempt, TaskState.FAILED, KIND[o]
    raise AssertionError("unreachable")


def retryable(spec: Spec, attempt: int) -> bool:
    o = spec.outcome(attempt)
    if o in TRANSIENT:
        return True
    earlier_content = any(spec.outcome(a) in CONTENT for a in range(1, attempt))
    return o in CONTENT and not earlier_content


#: aging effectively off (no task waits long enough for a level), so priorities are strict
NO_AGING_S = 1000.0
#: aging on: a task gains a level every 5 ms it waits, well within one plan's run
AGING_S = 0.005


async def execute(
    plan: Plan, aging_s: float = NO_AGING_S
) -> tuple[Tracker, Recorder, list[Task], dict[str, object]]:
    tracker = Tracker(plan, {s.key: s for s in plan.specs})
    rec = Recorder()
    limits = {name: ProviderLimits(concurrency=cap) for name, cap in plan.caps.items()}
    tasks: list[Task] = []
    for s in plan.specs:
        tasks.append(
            Task(
                f"{s.key}\nplease answer",
                key=s.key,
                agent=s.agent,
                priority=s.priority,
                provider=s.provider,
                depends_on=[tasks[d] for d in s.deps],
                on_dependency_failure=s.on_fail,  # type: ignore[arg-type]
                attempts=s.attempts,
                max_tokens=100,
            )
        )
    async with Engine(
        providers={name: provider(tracker, name) for name in plan.caps},
        concurrency=plan.concurrency,
        lanes=plan.lanes,
        agent_lanes=AGENT_LANES,
        agent_limits=plan.agent_limits,
        limits=limits,
        retry=RetryPolicy(attempts=POLICY_ATTEMPTS, backoff_base_s=0.001, backoff_cap_s=0.004),
        aging_s=aging_s,
        seed=1,
    ) as engine:
        run = engine.submit(tasks, retry_budget=plan.budget)
        run.listen(tracker.listener)
        run.listen(rec)
        metrics = await asyncio.wait_for(run.wait(), 60)
        metrics["_retries"] = run.retries
        metrics["_budget"] = run.retry_budget
        metrics["_status"] = run.status
    return tracker, rec, tasks, metrics


def check_run(
    plan: Plan, tracker: Tracker, rec: Recorder, tasks: list[Task], m: dict[str, Any]
) -> None:
    assert tracker.violations == []
    finished = rec.finished()  # also asserts one TaskFinished per task
    assert set(finished) == {s.key for s in plan.specs}
    started_at: dict[str, list[int]] = {}
    finished_at: dict[str, int] = {}
    for i, ev in enumerate(rec.events):
        if isinstance(ev, TaskStarted):
            started_at.setdefault(ev.task.key, []).append(i)
        elif isinstance(ev, TaskFinished):
            finished_at[ev.task.key] = i
    state = {t.key: t.state for t in tasks}
    retries = 0
    for s, t in zip(plan.specs, tasks, strict=True):
        assert t.state.terminal
        assert finished[s.key].state is t.state
        calls = tracker.calls.get(s.key, [])
        assert calls == list(range(1, len(calls) + 1)), "attempt numbers run 1, 2, 3..."
        assert len(calls) <= s.max_attempts
        assert len(started_at.get(s.key, [])) == len(calls)
        retries += max(0, len(calls) - 1)
        for d in s.deps:  # a dependency ends (durably) before its dependent starts
            for i in started_at.get(s.key, []):
                assert finished_at[f"t{d}"] < i
        dep_failed = any(state[f"t{d}"] is not TaskState.DONE for d in s.deps)
        r = finished[s.key].result
        if dep_failed and s.on_fail == "skip":
            assert t.state is TaskState.SKIPPED
            assert r.error is not None
            assert r.error.kind == "dependency_failed"
            assert calls == []
            continue
        assert calls, f"{s.key} must run (on_dependency_failure={s.on_fail})"
        n_exp, state_exp, kind_exp = oracle(s)
        if len(calls) == n_exp:
            assert t.state is state_exp
            if kind_exp is not None:
                assert r.error is not None
                assert r.error.kind == kind_exp
        else:  # cut short: only the run's retry budget may do that
            assert len(calls) < n_exp
            assert t.state is TaskState.FAILED
            assert retryable(s, len(calls))
            assert m["_retries"] >= m["_budget"]
        assert r.attempts == len(calls)
        for k in range(1, len(calls)):  # a truncated answer is retried with twice the tokens
            sent = tracker.max_tokens[s.key]
            if s.outcome(k) == "trunc" and not any(s.outcome(a) in CONTENT for a in range(1, k)):
                assert sent[k] == 2 * sent[k - 1]
    assert m["_retries"] == retries
    assert retries <= m["_budget"]
    counts = Counter(state.values())
    assert m["done"] == counts[TaskState.DONE]
    assert m["failed"] == counts[TaskState.FAILED]
    assert m["skipped"] == counts[TaskState.SKIPPED]
    assert m["cancelled"] == 0
    assert m["attempts"] == sum(len(c) for c in tracker.calls.values())
    assert m["retries"] == retries
    kinds = Counter(
        finished[t.key].result.error.kind  # type: ignore[union-attr]
        for t in tasks
        if t.state is TaskState.FAILED
    )
    assert m["failures_by_kind"] == dict(kinds)
    assert m["_status"] == ("failed" if counts[TaskState.FAILED] else "done")
    assert m["running"] == 0


@SETTINGS
@given(plans())
def test_limits_dependencies_attempts_and_terminal_states_hold(plan: Plan) -> None:
    tracker, rec, tasks, m = arun(lambda: execute(plan))
    check_run(plan, tracker, rec, tasks, m)


@SETTINGS
@given(plans())
def test_the_invariants_hold_with_aging_on(plan: Plan) -> None:
    """Aging reorders who starts, never what a run guarantees: limits, dependencies,
    attempts and terminal states hold all the same."""
    tracker, rec, tasks, m = arun(lambda: execute(plan, aging_s=AGING_S))
    check_run(plan, tracker, rec, tasks, m)


@SETTINGS
@given(plans(single=True))
def test_the_ready_task_with_the_highest_priority_starts_fifo_among_equals(plan: Plan) -> None:
    """One slot: at every start, no task that was ready and never tried has a higher level,
    and none of the same level became ready before a task starting its first attempt."""
    tracker, rec, tasks, m = arun(lambda: execute(plan))
    check_run(plan, tracker, rec, tasks, m)
    specs = {s.key: s for s in plan.specs}
    n_of = {t.key: t.n for t in tasks}
    root_ready = float("-inf")  # roots are queued together at submit: ties go by number
    ready: dict[str, tuple[float, int]] = {
        s.key: (root_ready, n_of[s.key]) for s in plan.specs if not s.deps
    }
    terminal: dict[str, TaskState] = {}
    tried: set[str] = set()
    for ev in rec.events:
        if isinstance(ev, TaskFinished):
            terminal[ev.task.key] = ev.state
            for s in plan.specs:
                if s.key in ready or not s.deps:
                    continue
                deps = [f"t{d}" for d in s.deps]
                if all(d in terminal for d in deps):
                    ok = all(terminal[d] is TaskState.DONE for d in deps)
                    if ok or s.on_fail == "run":
                        ready[s.key] = (ev.t, n_of[s.key])
        elif isinstance(ev, TaskStarted):
            key = ev.task.key
            first = key not in tried
            tried.add(key)
            level = specs[key].priority
            for other, when in ready.items():
                if other in tried:
                    continue
                assert specs[other].priority <= level, f"{key} started before {other}"
                if first and specs[other].priority == level:
                    assert ready[key] < when, f"{key} started before {other} (FIFO)"
