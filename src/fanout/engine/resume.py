"""Resuming a stored run: its tasks rebuilt (or matched to the ones given, by key), its
finished results loaded, the rest run.

What a resume keeps and what it runs again:
- done and failed tasks keep their stored results: they are not sent again, and their
  dependents see them; cancelled and skipped tasks run again (nothing was paid for them);
- attempts that were running when the last process stopped are recorded as interrupted;
  attempt counts and the retry budget carry on from where they were;
- the settings results depend on (providers and their base URLs, the default model and
  max_tokens, blueprint versions) are compared with the stored ones, and each finished
  task's cache key is computed again: if anything changed, the resume fails and says what,
  unless `reconfigure`, which re-runs exactly the tasks whose key changed (and the tasks
  that depend on them, since their input changes with them).
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from fanout.engine.budget import Prices, RunBudget
from fanout.engine.cache import request_keys
from fanout.engine.ledger import Ledger
from fanout.engine.plan import Planner
from fanout.engine.request import build_request
from fanout.engine.run import Run
from fanout.engine.settings import EngineSettings
from fanout.errors import ConfigError, FanoutError, PlanError
from fanout.store.base import (
    Lease,
    Op,
    ResultsDropped,
    RunResumed,
    RunSnapshot,
    Store,
    StoredResult,
    StoredTask,
)
from fanout.store.base import TasksAdded as StoreTasksAdded
from fanout.store.queries import HOST, LEASE_S
from fanout.store.spec import task_from_spec, task_spec
from fanout.tasks import Result, Task, TaskState

RERUN = frozenset({TaskState.CANCELLED, TaskState.SKIPPED})
#: `retry_failed`: False (failed tasks keep their results), True (every failed task runs
#: again), or the error classes and kinds to run again (e.g. {"transient", "timeout"})
RetryFailed = bool | Collection[str]


def reruns(sr: StoredResult, retry_failed: RetryFailed) -> bool:
    """Whether a stored result is run again on this resume."""
    if sr.state in RERUN:
        return True
    if sr.state is not TaskState.FAILED or not retry_failed:
        return False
    if retry_failed is True:
        return True
    e = sr.error
    return e is not None and (e.error_class in retry_failed or e.kind in retry_failed)


MAX_LISTED = 5


def settings_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What changed between two `run_settings`, one phrase per change."""
    out: list[str] = []
    for name, was in (old.get("providers") or {}).items():
        now = (new.get("providers") or {}).get(name)
        if now is None:
            out.append(f"provider {name!r} is no longer configured")
            continue
        for field in ("type", "base_url"):
            if was.get(field) != now.get(field):
                out.append(f"provider {name!r} {field}: {was.get(field)} -> {now.get(field)}")
    for field in ("provider", "model", "max_tokens"):
        if field in old and old.get(field) != new.get(field):
            out.append(f"default {field}: {old.get(field)} -> {new.get(field)}")
    new_bps = new.get("blueprints") or {}
    for name, was in (old.get("blueprints") or {}).items():
        if name in new_bps and new_bps[name] != was:
            out.append(f"blueprint {name!r}: version {was} -> {new_bps[name]}")
    return out


def match_tasks(
    snap: RunSnapshot,
    given: Sequence[Task] | None,
    blueprints: Mapping[str, Any] | None,
    retry_failed: RetryFailed = False,
) -> tuple[list[Task], int]:
    """The run's tasks in stored order (then any new ones given); returns them and how
    many were stored."""
    stored = snap.tasks
    if [st.n for st in stored] != list(range(len(stored))):
        raise FanoutError(f"run {snap.run_id}: its stored tasks are not numbered 0..n-1")
    by_key: dict[str, Task] = {}
    if given is not None:
        for t in given:
            if t.key in by_key:
                raise PlanError(f"two tasks have the key {t.key!r}: keys must be unique")
            by_key[t.key] = t
    out: list[Task] = []
    unbuildable: list[str] = []
    for st in stored:
        mine = by_key.pop(st.key, None)
        if mine is None:
            mine = rebuild_task(st, snap, blueprints, unbuildable, retry_failed)
        out.append(mine)
    if unbuildable:
        shown = ", ".join(repr(k) for k in unbuildable[:MAX_LISTED])
        raise FanoutError(
            f"run {snap.run_id}: {len(unbuildable)} unfinished task(s) cannot be rebuilt from "
            f"the store (their prompts or callbacks are Python callables: {shown}); resume "
            "it from Python with the same tasks: engine.resume(run_id, tasks=[...])",
            run_id=snap.run_id,
        )
    return out + list(by_key.values()), len(stored)


def rebuild_task(
    st: StoredTask,
    snap: RunSnapshot,
    blueprints: Mapping[str, Any] | None,
    bad: list[str],
    retry_failed: RetryFailed,
) -> Task:
    if st.spec is not None:
        return task_from_spec(st.spec, st.key, blueprints)
    r = snap.results.get(st.n)
    if r is None or reruns(r, retry_failed):
        bad.append(st.key)
    # a finished task needs no prompt: a stand-in that carries its key and result
    return Task("", key=st.key, lane=st.lane, agent=st.agent)


def changed_tasks(
    planner: Planner,
    settings: EngineSettings,
    snap: RunSnapshot,
    tasks: Sequence[Task | None],
    loaded: Mapping[int, Result],
) -> set[int]:
    """Numbers of loaded tasks whose request (cache key) is not what it was, with the
    loaded tasks that depend on them."""
    changed: set[int] = set()
    for n in sorted(loaded):
        stored = snap.results[n].cache_key
        t = tasks[n]
        if stored is None or t is None or (t.prompt == "" and t.body is None):
            continue
        deps: dict[str, Result] = {}
        for d in t.depends_on:
            assert isinstance(d, Task)
            r = loaded.get(d.n)
            if r is not None:
                deps[d.key] = r
        if callable(t.prompt) and len(deps) < len(t.depends_on):
            continue  # cannot render it without its dependencies' answers
        try:
            request = build_request(
                t, 1, model=settings.model, max_tokens=settings.max_tokens, deps=deps, retry=False
            )
            key = request_keys(planner.provider_of(t), request, t)[0]
        except Exception:
            continue
        if key != stored:
            changed.add(n)
    grew = bool(changed)
    while grew:
        grew = False
        for n in loaded:
            if n in changed:
                continue
            t = tasks[n]
            if t is not None and any(isinstance(d, Task) and d.n in changed for d in t.depends_on):
                changed.add(n)
                grew = True
    return changed


async def resume_run(
    *,
    ledger: Ledger,
    planner: Planner,
    settings: EngineSettings,
    store: Store,
    owner: str,
    run_id: str,
    given: list[Task] | None,
    reconfigure: bool,
    blueprints: Mapping[str, Any] | None,
    config: Mapping[str, Any] | None,
    retry_budget: int | None,
    deadline_s: float | None = None,
    retry_failed: RetryFailed = False,
    budget: RunBudget | None = None,
    expect: int = 0,
) -> Run:
    """Go on with stored run `run_id` as the module docstring says; the engine checked it
    can (it runs, with a persistent store). With `retry_failed`, failed tasks (all, or those
    of the given error classes or kinds) run again too, their attempt counts begun anew, and
    their earlier retries no longer count against the run's retry budget."""
    if ledger.get(run_id) is not None:
        raise PlanError(f"run {run_id} is already running in this engine", run_id=run_id)
    snap = await store.snapshot(run_id)
    if snap is None:
        raise FanoutError(f"no run {run_id!r} in the run store ({store})", run_id=run_id)
    await store.claim(run_id, Lease(owner, os.getpid(), HOST, time.time() + LEASE_S))
    task_list, stored = match_tasks(snap, given, blueprints, retry_failed)
    if budget is None:
        budget = RunBudget(Prices(settings.prices))
    run = Run(
        ledger,
        run_id,
        kind=snap.kind,
        config=snap.config if config is None else config,
        retry=settings.retry,
        retry_budget=retry_budget,
        concurrency=settings.concurrency,
        budget=budget,
    )
    run.resumed = True
    run.expect(expect)
    try:
        planner.check(run_id, task_list)
        specs = [task_spec(t) for t in task_list[stored:]]
        ledger.attach(run, task_list)
        run.budget.check_tasks(task_list, settings.model)
        loaded = {
            n: sr.to_result(task_list[n])
            for n, sr in snap.results.items()
            if n < stored and not reruns(sr, retry_failed)
        }
        fresh = {
            n for n, sr in snap.results.items() if sr.state is TaskState.FAILED and n not in loaded
        }
        dropped = {n for n in snap.results if n not in loaded}
        changed = changed_tasks(planner, settings, snap, task_list, loaded)
        result_settings = planner.result_settings(task_list)
        problems = settings_changes(snap.settings, result_settings)
        if (changed or problems) and not reconfigure:
            raise ConfigError(_changed_message(run_id, problems, changed, task_list, len(loaded)))
    except BaseException:
        for t in task_list:  # the caller may submit them again
            t.run, t.n, t.group = None, -1, None
        raise
    for n in changed:
        del loaded[n]
    dropped |= changed
    ops: list[Op] = [
        RunResumed(run_id, time.time(), run.config, result_settings, owner, settings.concurrency)
    ]
    if dropped:
        ops.append(ResultsDropped(run_id, sorted(dropped)))
    if len(task_list) > stored:
        ops.append(StoreTasksAdded(run_id, task_list[stored:], specs))
    # calls that never reached the provider cost no attempt and no retry budget, then as
    # now, nor did those marked free (a 429 naming its wait while other calls got through)
    free: dict[int, int] = dict(snap.free)
    for n, _, outcome, kind, _ in snap.attempts:
        if outcome == "error" and kind == "connection":
            free[n] = free.get(n, 0) + 1
    run.retries = sum(
        1
        for n, _, outcome, kind, _ in snap.attempts
        if outcome == "error" and kind != "connection" and n not in fresh
    ) - sum(k for n, k in snap.free.items() if n not in fresh)
    for n, r in loaded.items():  # what the run spent before counts against its cap
        if r.attempts:  # (an answer from the cache cost nothing)
            budget.settle(n, r.model or task_list[n].model, r.input_tokens, r.output_tokens)
    run.metrics_.seed(snap, dropped)
    ledger.adopt(run, task_list, ops, loaded, snap.tries(), deadline_s, fresh, free)
    return run


def _changed_message(
    run_id: str, problems: list[str], changed: set[int], tasks: Sequence[Task], kept: int
) -> str:
    parts = [f"run {run_id} was started with other settings"]
    if problems:
        parts.append(": " + "; ".join(problems[:MAX_LISTED]))
        if len(problems) > MAX_LISTED:
            parts.append(f" (and {len(problems) - MAX_LISTED} more)")
    if changed:
        keys = ", ".join(repr(tasks[n].key) for n in sorted(changed)[:MAX_LISTED])
        parts.append(
            f". {len(changed)} finished task(s) would now send a different request ({keys}"
            f"{', ...' if len(changed) > MAX_LISTED else ''})"
        )
    parts.append(
        f". Resume with --reconfigure (Python: reconfigure=True) to re-run "
        f"{'those ' + str(len(changed)) + ' task(s)' if changed else 'nothing already finished'}"
        f" and keep the other {kept - len(changed)} result(s), or start a new run"
    )
    return "".join(parts)
