"""Readiness and finishing: how a task gets queued (or waits, or is answered from the cache),
how its result is recorded and, once durable, reported, and how a run ends: done, failed,
cancelled, or interrupted (resumable). Functions of the engine, called from its methods."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fanout.engine.attempts import INTERRUPT
from fanout.engine.events import RunFinished, TaskFinished
from fanout.engine.plan import DEFAULT_AGENT, DEFAULT_LANE
from fanout.engine.request import build_request, estimate
from fanout.engine.scheduler import Group
from fanout.errors import FanoutError
from fanout.store.base import CACHE_NONE, CACHE_STORE, ResultRecorded, RunClosed
from fanout.tasks import ErrorInfo, Result, Task, TaskState

if TYPE_CHECKING:
    from fanout.engine.engine import Engine
    from fanout.engine.run import Run

RUNNING = TaskState.RUNNING
READY = TaskState.READY
WAITING = TaskState.WAITING
DONE = TaskState.DONE
FAILED = TaskState.FAILED
SKIPPED = TaskState.SKIPPED
CANCELLED = TaskState.CANCELLED


def deps_of(engine: Engine, t: Task) -> dict[str, Result]:
    run: Run = t.run
    out: dict[str, Result] = {}
    for d in t.depends_on:
        assert isinstance(d, Task)
        r = run.results_by_n[d.n]
        if r is not None:
            out[d.key] = r
    return out


def release(engine: Engine, tasks: list[Task], now: float) -> None:
    """Link `tasks` to their dependencies; queue those that can start."""
    ready: list[Task] = []
    for t in tasks:
        if t.state.terminal:  # a resumed run's finished task
            continue
        left = 0
        failed_dep: Task | None = None
        for d in t.depends_on:
            assert isinstance(d, Task)
            if d.state.terminal:
                if d.state is not DONE and failed_dep is None:
                    failed_dep = d
            else:
                left += 1
                if d.dependents is None:
                    d.dependents = []
                d.dependents.append(t)
        t.deps_left = left
        if failed_dep is not None and t.on_dependency_failure == "skip":
            skip_for_dependency(engine, t, failed_dep)
        elif left == 0:
            ready.append(t)
    for t in ready:
        make_ready(engine, t, now)


def make_ready(engine: Engine, t: Task, now: float) -> None:
    if t.when is not None:
        try:
            selected = t.when(deps_of(engine, t))
        except Exception as exc:
            finalize(engine, t, FAILED, ErrorInfo("permanent", "condition_error", repr(exc)))
            return
        if not selected:
            finalize(engine, t, SKIPPED, ErrorInfo("dependency", "not_selected", "not selected"))
            return
    if t.run.interrupting:
        return  # stays waiting: a resume starts it
    gate = engine._gate
    if gate is not None:
        try:
            keys = keys_of(engine, t)
        except Exception as exc:  # a prompt callable that raises
            finalize(engine, t, FAILED, ErrorInfo("permanent", "prompt_error", repr(exc)))
            return
        gate.admit(t, keys[0])
        return
    g: Group = t.group
    if engine.provider_meters[g.key[2]].tpm is not None and t.est_tokens < 0:
        t.est_tokens = estimate(t, engine.max_tokens)
    assert engine._sched is not None
    engine._sched.push(t, g, now, expected_for(engine, t) if g.lef else 0.0)


def enqueue(engine: Engine, t: Task, now: float | None = None) -> None:
    """Queue `t` to be sent."""
    if t.run.interrupting:
        return
    g: Group = t.group
    if engine.provider_meters[g.key[2]].tpm is not None and t.est_tokens < 0:
        t.est_tokens = estimate(t, engine.max_tokens)
    assert engine._sched is not None and engine._loop is not None
    when = engine._loop.time() if now is None else now
    engine._sched.push(t, g, when, expected_for(engine, t) if g.lef else 0.0)


def keys_of(engine: Engine, t: Task) -> tuple[bytes, bytes]:
    """The task's (cache key, request hash), computed once per process from its first
    request here (before any retry changes it)."""
    run: Run = t.run
    keys = run.keys.get(t._n)
    if keys is None:
        request = build_request(
            t, 1, model=engine.model, max_tokens=engine.max_tokens, deps=deps_of(engine, t)
        )
        provider = engine.providers[t.provider or engine.default_provider]
        keys = run.keys[t._n] = engine._request_keys(provider, request, t)
    return keys


def expected_for(engine: Engine, t: Task) -> float:
    if t.expected_s is not None:
        return t.expected_s
    agent = t.agent or DEFAULT_AGENT
    if agent in engine.expected:
        return engine.expected[agent]
    return engine._observed.get(agent, 0.0)


def skip_for_dependency(engine: Engine, t: Task, dep: Task) -> None:
    r = dep.run.results_by_n[dep._n]
    why = r.error.message if r is not None and r.error is not None else str(dep.state)
    finalize(
        engine,
        t,
        SKIPPED,
        ErrorInfo("dependency", "dependency_failed", f"dependency {dep.key} {dep.state}: {why}"),
    )


def finalize(
    engine: Engine,
    t: Task,
    state: TaskState,
    error: ErrorInfo | None,
    result: Result | None = None,
    duration: float = -1.0,
    cache: int = CACHE_NONE,
) -> None:
    """Record a terminal result; the task becomes terminal once it is durable.

    `duration` is that of the attempt that ended the task, -1 when none did."""
    if result is None:
        result = Result(t, state, attempts=t.tries, error=error)
    t.ran_for = duration >= 0.0
    if t.state is READY:  # leave the ready queue or the retry timer at once
        t.state = WAITING
    run: Run = t.run
    run.results_by_n[t._n] = result
    assert engine._journal is not None
    keys = run.keys.pop(t._n, None) if run.keys else None
    if keys is None:
        op = ResultRecorded(run.id, t._n, result, duration)
    else:
        if cache == CACHE_NONE and engine._gate is not None and state is DONE:
            cache = CACHE_STORE
        op = ResultRecorded(run.id, t._n, result, duration, keys[0], keys[1], cache)
    engine._journal.commit(op, t)


def on_durable(engine: Engine, tasks: list[Task]) -> None:
    loop = engine._loop
    assert loop is not None
    now = loop.time()
    gate = engine._gate
    for t in tasks:
        run: Run = t.run
        result = run.results_by_n[t._n]
        assert result is not None
        t.state = result.state
        run.finished += 1
        duration = result.latency_s if t.ran_for else -1.0
        run.bus.emit(TaskFinished(now, t, result.state, t.lane or DEFAULT_LANE, duration, result))
        if gate is not None and gate.led:
            gate.on_durable(t, result)
        deps = t.dependents
        if deps:
            t.dependents = None
            ok = result.state is DONE
            for d in deps:
                if d.state is not WAITING or run.results_by_n[d._n] is not None:
                    continue
                if not ok and d.on_dependency_failure == "skip":
                    skip_for_dependency(engine, d, t)
                    continue
                d.deps_left -= 1
                if d.deps_left == 0:
                    make_ready(engine, d, now)
        if t.then is not None and result.state is DONE:
            try:
                more = t.then(result)
                if more:
                    engine.add_tasks(run, list(more))
            except Exception as exc:
                run.callback_errors.append(f"{t.key}: then() raised {exc!r}")
        if run.finished == run.total:
            close_run(engine, run)


def close_run(engine: Engine, run: Run, status: str | None = None) -> None:
    if run.status != "running":
        return
    m = run.metrics_
    if status is not None:
        pass
    elif run.cancel_reason is not None:
        status = "cancelled"
    elif m.states[FAILED] or m.states[CANCELLED]:
        status = "failed"
    else:
        status = "done"
    run.status = status
    if run.deadline_handle is not None:
        run.deadline_handle.cancel()
    if run.grace_handle is not None:
        run.grace_handle.cancel()
    assert engine._journal is not None and engine._loop is not None
    run.bus.emit(RunFinished(engine._loop.time(), run.id, status, run.counts()))
    wall = (m.ended_at or 0.0) - (m.started_at or 0.0)
    engine._journal.append(RunClosed(run.id, status, time.time(), wall))
    run.bus.close()

    async def _settle() -> None:
        assert engine._journal is not None
        await engine._journal.flush()
        run._resolve()

    task = engine._loop.create_task(_settle())
    engine._background.add(task)
    task.add_done_callback(engine._background.discard)


def interrupt(engine: Engine, run: Run, grace_s: float | None = None) -> None:
    """Start nothing new in `run`; let running calls finish, stopping those still
    running after `grace_s` (None: wait for them; 0: stop them now). Unfinished tasks
    get no result: the run ends "interrupted" and `resume` goes on with them."""
    if run.done or run.status != "running":
        return
    assert engine._loop is not None
    if not run.interrupting:
        run.interrupting = True
        gate = engine._gate
        for t in run.tasks:
            if t.state is READY:  # leaves the ready queue or the retry timer
                t.state = WAITING
            if gate is not None and t in gate.led and t.state is not RUNNING:
                gate.abandon(t)
    if grace_s is not None:
        if run.grace_handle is not None:
            run.grace_handle.cancel()
        run.grace_handle = engine._loop.call_later(grace_s, stop_running, engine, run)
    check_interrupted(engine, run)


def stop_running(engine: Engine, run: Run) -> None:
    for slot in engine._slots:
        t = slot.task
        if t is not None and t.run is run and slot.abort is None and slot.worker is not None:
            slot.abort = INTERRUPT
            if slot.worker is not asyncio.current_task():
                slot.worker.cancel()


def check_interrupted(engine: Engine, run: Run) -> None:
    """Close an interrupted run once none of its attempts is running."""
    if not run.interrupting or run.status != "running" or run.cancel_reason is not None:
        return
    for slot in engine._slots:
        if slot.task is not None and slot.task.run is run:
            return
    close_run(engine, run, "interrupted")


def on_store_error(engine: Engine, exc: BaseException) -> None:
    if isinstance(exc, asyncio.CancelledError):
        return
    engine._fatal = exc
    for run in engine._runs.values():
        if not run.done:
            run.status = "failed"
            run.cancel_reason = f"the run store failed: {exc!r}"
            run._done.set_exception(FanoutError(run.cancel_reason, run_id=run.id))
            run._done.exception()  # mark retrieved; wait() re-raises it
    for slot in engine._slots:  # stop spending: no result can be recorded any more
        if slot.task is not None and slot.abort is None and slot.worker is not None:
            slot.abort = "the run store failed"
            slot.worker.cancel()


def cancel_run(engine: Engine, run: Run, reason: str) -> None:
    if run.done or run.cancel_reason is not None:
        return
    run.cancel_reason = reason
    for t in run.tasks:
        cancel_task(engine, t, reason)
    if run.finished == run.total:
        close_run(engine, run)


def cancel_task(engine: Engine, t: Task, reason: str) -> bool:
    if t.state.terminal or t.run.results_by_n[t._n] is not None:
        return False
    if t.state is RUNNING:
        for slot in engine._slots:
            if slot.task is t and slot.abort is None and slot.worker is not None:
                slot.abort = reason
                if slot.worker is not asyncio.current_task():  # else: before the call
                    slot.worker.cancel()
                return True
        return False
    finalize(engine, t, CANCELLED, ErrorInfo("cancelled", "cancelled", reason))
    return True
