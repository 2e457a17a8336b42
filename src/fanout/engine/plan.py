"""Planning: checking tasks added to a run before anything of them is recorded or run."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from fanout.errors import ConfigError, PlanError
from fanout.tasks import Task

if TYPE_CHECKING:
    from fanout.engine.run import Run


def plan(
    run: Run, tasks: Sequence[Task], providers: Collection[str], default_provider: str
) -> None:
    """Check `tasks` as an addition to `run`: keys unique, dependencies known, no cycle."""
    new_keys: dict[str, Task] = {}
    for t in tasks:
        if t.run is not None:
            raise PlanError(f"task {t.id} was already submitted", run_id=run.id)
        if t.has_explicit_key:
            k = t.key
            if k in new_keys or k in run.by_key:
                raise PlanError(f"two tasks have the key {k!r}: keys must be unique in a run")
            new_keys[k] = t
    for t in tasks:
        pname = t.provider or default_provider
        if pname not in providers:
            raise ConfigError(
                f"task {t.key!r} asks for provider {pname!r}, which is not configured "
                f"(configured: {', '.join(sorted(providers))})"
            )
    members = {id(t) for t in tasks}
    derived: dict[str, Task] | None = None
    for t in tasks:
        resolved: list[Task] = []
        for d in t.depends_on:
            if isinstance(d, Task):
                if id(d) not in members and d.run is not run:
                    raise PlanError(
                        f"task {t.key!r} depends on a task that is not in this run",
                        run_id=run.id,
                    )
                resolved.append(d)
                continue
            dep = new_keys.get(d) or run.by_key.get(d)
            if dep is None:
                if derived is None:  # fall back to derived keys, computed once
                    derived = {x.key: x for x in tasks}
                    derived.update({x.key: x for x in run.tasks})
                dep = derived.get(d)
            if dep is None:
                raise PlanError(
                    f"task {t.key!r} depends on {d!r}, which is not a task of this run",
                    run_id=run.id,
                )
            if dep is t:
                raise PlanError(f"task {t.key!r} depends on itself", run_id=run.id)
            resolved.append(dep)
        t.depends_on = tuple(resolved)
    if any(t.depends_on for t in tasks):
        check_acyclic(tasks, members)


def check_acyclic(tasks: Sequence[Task], members: set[int]) -> None:
    """Kahn's algorithm over the new tasks; dependencies on existing tasks cannot cycle."""
    indeg: dict[int, int] = {}
    users: dict[int, list[Task]] = {}
    for t in tasks:
        n = 0
        for d in t.depends_on:
            assert isinstance(d, Task)
            if id(d) in members:
                n += 1
                users.setdefault(id(d), []).append(t)
        indeg[id(t)] = n
    stack = [t for t in tasks if indeg[id(t)] == 0]
    seen = 0
    while stack:
        t = stack.pop()
        seen += 1
        for u in users.get(id(t), ()):
            indeg[id(u)] -= 1
            if indeg[id(u)] == 0:
                stack.append(u)
    if seen != len(tasks):
        cyc = [t.key for t in tasks if indeg[id(t)] > 0][:5]
        raise PlanError(
            "the dependencies form a cycle (tasks involved include: "
            + ", ".join(repr(k) for k in cyc)
            + "); remove one of the depends_on links"
        )
