"""Planning: checking tasks added to a run before anything of them is recorded or run, and
binding each task to its provider, model, lane and scheduler group (with its meters)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from fanout.engine.limits import ConcurrencyMeter, Meter, ProviderLimits, ProviderMeter
from fanout.engine.scheduler import Group
from fanout.errors import ConfigError, PlanError
from fanout.tasks import Task

if TYPE_CHECKING:
    from fanout.engine.engine import Engine
    from fanout.engine.run import Run

DEFAULT_LANE = "default"
DEFAULT_AGENT = "default"


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


def bind(engine: Engine, t: Task) -> None:
    """Resolve provider, model, lane; attach the task to its scheduler group."""
    pname = t.provider or engine.default_provider
    provider = engine.providers[pname]
    t.provider = pname
    if t.model is None:
        t.model = str((t.body or {}).get("model") or engine.model)
    agent = t.agent or DEFAULT_AGENT
    lane = t.lane or engine.agent_lanes.get(agent) or DEFAULT_LANE
    t.lane = lane
    lkey = provider.limiter_key(t.model)
    gkey = (lane, agent, lkey)
    g = engine._groups.get(gkey)
    if g is None:
        g = engine._groups[gkey] = Group(
            gkey,
            meters_for(engine, lane, agent, pname, t.model, lkey),
            lef=engine.order == "longest_first",
        )
    t.group = g


def meters_for(
    engine: Engine, lane: str, agent: str, pname: str, model: str, lkey: str
) -> list[Meter]:
    meters: list[Meter] = []
    lim = engine.lanes.get(lane)
    if lim is not None and lim < engine.concurrency:
        m = engine._lane_meters.get(lane)
        if m is None:
            m = engine._lane_meters[lane] = ConcurrencyMeter(f"lane {lane}", lim)
        meters.append(m)
    alim = engine.agent_limits.get(agent)
    if alim is not None:
        am = engine._agent_meters.get(agent)
        if am is None:
            am = engine._agent_meters[agent] = ConcurrencyMeter(f"agent {agent}", alim)
        meters.append(am)
    pm = engine.provider_meters.get(lkey)
    if pm is None:
        plim = engine.limits.get(f"{pname}:{model}") or engine.limits.get(pname)
        plim = plim or ProviderLimits()
        pm = engine.provider_meters[lkey] = ProviderMeter(
            lkey, plim, default_cap=engine.concurrency
        )
    meters.append(pm)
    return meters
