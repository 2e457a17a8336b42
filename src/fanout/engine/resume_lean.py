"""A lean resume: a stored run taken up again without loading what it has finished.

`resume_run` (resume.py) rebuilds every stored task and result; at 600,000 finished lines
that is minutes and hundreds of MB. A lean resume (asked for by an application that keeps
its own work outside the engine's memory, like a streamed batch) asks the store only for
the live tasks (unfinished, or failed, or named in `keep`, or among the few newest done
ones), the counts of everything else, and one done result at a time for the run's figures.
The finished tasks' slots in `run.tasks` stay empty, as if `Run.forget` had let them go.

It checks less than a full resume: the settings results depend on are compared as always,
but the requests of only the loaded finished tasks (the newest few, and those kept) are
built again and compared. Whenever that finds a difference, or the store cannot do a lean
read, it returns None and the caller resumes in full (which says what changed, or re-runs
it with `reconfigure`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping
from typing import Any

from fanout.engine.budget import Prices, RunBudget
from fanout.engine.ledger import Ledger
from fanout.engine.plan import DEFAULT_LANE, Planner
from fanout.engine.resume import RetryFailed, changed_tasks, rebuild_task, reruns, settings_changes
from fanout.engine.run import Run
from fanout.engine.settings import EngineSettings
from fanout.engine.sketch import LOG_GAMMA
from fanout.errors import PlanError
from fanout.store.base import Lease, Op, ResultsDropped, RunResumed, Store
from fanout.store.queries import HOST, LEASE_S
from fanout.tasks import Task, TaskState


async def resume_lean(
    *,
    ledger: Ledger,
    planner: Planner,
    settings: EngineSettings,
    store: Store,
    owner: str,
    run_id: str,
    keep: Collection[str],
    blueprints: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    retry_budget: int | None,
    deadline_s: float | None = None,
    retry_failed: RetryFailed = False,
    budget: RunBudget | None = None,
    expect: int = 0,
) -> Run | None:
    """Resume `run_id` leanly (see the module docstring), or None: resume it in full."""
    if budget is None:
        budget = RunBudget(Prices(settings.prices))
    run = Run(
        ledger,
        run_id,
        kind="",
        config=config or {},
        retry=settings.retry,
        retry_budget=retry_budget,
        concurrency=settings.concurrency,
        budget=budget,
    )
    run.expect(expect)  # the tasks the application will have added once it is done
    metrics = run.metrics_
    point = await store.open_run(run_id, keep, LOG_GAMMA)
    if point is None:
        return None
    snap = point.snap
    run.kind = snap.kind
    if config is None:
        run.config = dict(snap.config)
    await store.claim(run_id, Lease(owner, os.getpid(), HOST, time.time() + LEASE_S))
    unbuildable: list[str] = []
    live = [rebuild_task(st, snap, blueprints, unbuildable, retry_failed) for st in snap.tasks]
    if unbuildable:
        return None  # the full resume says which, and how to resume them
    for st, t in zip(snap.tasks, live, strict=True):
        t.n = st.n
    try:
        planner.check(run_id, live)
        _attach_at(planner, run, point.stored, live)
        budget.check_tasks(live, settings.model)
        loaded = {
            t.n: sr.to_result(t)
            for t in live
            if (sr := snap.results.get(t.n)) is not None and not reruns(sr, retry_failed)
        }
        fresh = {
            n for n, sr in snap.results.items() if sr.state is TaskState.FAILED and n not in loaded
        }
        dropped = {n for n in snap.results if n not in loaded}
        changed = changed_tasks(planner, settings, snap, run.tasks, loaded)
        result_settings = planner.result_settings(live)
        problems = settings_changes(snap.settings, result_settings)
    except PlanError:  # e.g. a dependency not loaded: the full resume has them all
        changed, problems = {-1}, []
    except BaseException:
        _release(live)
        raise
    if changed or problems:
        _release(live)
        return None
    run.resumed = True
    ops: list[Op] = [
        RunResumed(run_id, time.time(), run.config, result_settings, owner, settings.concurrency)
    ]
    if dropped:
        ops.append(ResultsDropped(run_id, sorted(dropped)))
    free: dict[int, int] = dict(snap.free)  # (429s that cost nothing: `m003_free_attempts`)
    again = 0  # failures of the tasks run afresh: no longer counted against the budget
    for n, _, outcome, kind, _ in snap.attempts:
        if outcome == "error" and kind == "connection":
            free[n] = free.get(n, 0) + 1
        elif outcome == "error" and n in fresh:
            again += 1
    run.retries = point.retries - again - sum(k for n, k in snap.free.items() if n not in fresh)
    for n, r in loaded.items():
        if r.attempts:
            x = run.tasks[n]
            budget.settle(n, r.model or (x.model if x else None), r.input_tokens, r.output_tokens)
    spent: dict[str, list[int]] = {}  # model -> tokens of the done results not loaded
    done = 0
    for g in point.done:
        done += g.count
        metrics.seed_done(g)
        if g.called and g.model is not None:
            u = spent.setdefault(g.model, [0, 0])
            u[0] += g.input_tokens
            u[1] += g.output_tokens
    for model, (tokens_in, tokens_out) in spent.items():
        budget.carry(model, tokens_in, tokens_out)
    metrics.seed_segments(snap)
    for outcome, kind, count, ns in point.attempt_totals:
        metrics.seed_attempts(outcome, kind, count, ns)
    by_n = {st.n: st for st in snap.tasks}
    for n, r in loaded.items():
        st = by_n[n]
        metrics.seed_result(
            r.state,
            st.lane,
            st.agent,
            r.attempts,
            r.latency_s,
            r.error,
            r.input_tokens,
            r.output_tokens,
        )
    run.finished += done
    if done:
        run.forgotten[TaskState.DONE] = done
    lanes: dict[str, int] = {}
    for lane, count in point.lanes.items():
        name = lane or DEFAULT_LANE
        lanes[name] = lanes.get(name, 0) + count
    ledger.adopt(run, live, ops, loaded, snap.tries(), deadline_s, fresh, free, lanes=lanes)
    return run


def _attach_at(planner: Planner, run: Run, stored: int, tasks: list[Task]) -> None:
    """`Ledger.attach` for a lean resume: `run` gets `stored` slots, each of `tasks` the one
    of its number `t.n`; the others stay empty (finished, kept in the store)."""
    first = min((t.n for t in tasks), default=stored)  # the slots before take no memory
    run.tasks.grow(first)
    run.results_by_n.grow(first)
    run.tasks.extend([None] * (stored - first))
    run.results_by_n.extend([None] * (stored - first))
    for t in tasks:
        t.run = run
        t.state = TaskState.WAITING
        planner.bind(t)
        if t.has_explicit_key:
            run.by_key[t.key] = t
        run.tasks[t.n] = t


def _release(tasks: list[Task]) -> None:
    for t in tasks:  # as they were: the full resume builds its own
        t.run, t.n, t.group = None, -1, None
