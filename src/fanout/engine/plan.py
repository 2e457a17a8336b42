"""`Planner`: checks tasks added to a run before anything of them is recorded or run, and
binds each task to its provider, model, lane and scheduler group (with the group's meters).

It owns the groups and meters (lane, agent, provider budgets), the providers by name, and
the latencies observed per agent (for longest-expected-first ordering).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fanout.engine.limits import ConcurrencyMeter, Meter, ProviderLimits, ProviderMeter
from fanout.engine.request import estimate
from fanout.engine.scheduler import Group
from fanout.engine.settings import EngineSettings
from fanout.errors import ConfigError, PlanError
from fanout.providers.base import Provider
from fanout.tasks import Task

DEFAULT_LANE = "default"
DEFAULT_AGENT = "default"
EWMA_WEIGHT = 0.2  # of the newest attempt in an agent's observed latency


class Planner:
    def __init__(self, settings: EngineSettings, providers: Mapping[str, Provider]) -> None:
        if not providers:
            raise ConfigError("no provider given")
        self.providers: dict[str, Provider] = dict(providers)
        self.default_provider = settings.provider or next(iter(self.providers))
        if self.default_provider not in self.providers:
            raise ConfigError(
                f"provider {self.default_provider!r} is not configured "
                f"(configured: {', '.join(sorted(self.providers))})"
            )
        self._settings = settings
        self._lef = settings.order == "longest_first"
        self._groups: dict[tuple[str, str, str], Group] = {}
        self._lane_meters: dict[str, ConcurrencyMeter] = {}
        self._agent_meters: dict[str, ConcurrencyMeter] = {}
        self.provider_meters: dict[str, ProviderMeter] = {}
        self._observed: dict[str, float] = {}  # agent -> EWMA of attempt latency

    # -- checking -------------------------------------------------------------------------

    def check(
        self,
        run_id: str,
        tasks: Sequence[Task],
        existing: Sequence[Task | None] = (),
        by_key: Mapping[str, Task] | None = None,
    ) -> None:
        """Check `tasks` as an addition to run `run_id` (which holds `existing`, with the
        explicit keys `by_key`): keys unique, providers known, dependencies known, no cycle.
        Resolves each task's `depends_on` to task objects."""
        by_key = by_key or {}
        new_keys: dict[str, Task] = {}
        for t in tasks:
            if t.run is not None:
                raise PlanError(f"task {t.id} was already submitted", run_id=run_id)
            if t.has_explicit_key:
                k = t.key
                if k in new_keys or k in by_key:
                    raise PlanError(f"two tasks have the key {k!r}: keys must be unique in a run")
                new_keys[k] = t
        for t in tasks:
            pname = t.provider or self.default_provider
            if pname not in self.providers:
                raise ConfigError(
                    f"task {t.key!r} asks for provider {pname!r}, which is not configured "
                    f"(configured: {', '.join(sorted(self.providers))})"
                )
        members = {id(t) for t in tasks}
        derived: dict[str, Task] | None = None
        for t in tasks:
            resolved: list[Task] = []
            for d in t.depends_on:
                if isinstance(d, Task):
                    if id(d) not in members and (d.run is None or d.run.id != run_id):
                        raise PlanError(
                            f"task {t.key!r} depends on a task that is not in this run",
                            run_id=run_id,
                        )
                    resolved.append(d)
                    continue
                dep = new_keys.get(d) or by_key.get(d)
                if dep is None:
                    if derived is None:  # fall back to derived keys, computed once
                        derived = {x.key: x for x in tasks}
                        derived.update({x.key: x for x in existing if x is not None})
                    dep = derived.get(d)
                if dep is None:
                    raise PlanError(
                        f"task {t.key!r} depends on {d!r}, which is not a task of this run",
                        run_id=run_id,
                    )
                if dep is t:
                    raise PlanError(f"task {t.key!r} depends on itself", run_id=run_id)
                resolved.append(dep)
            t.depends_on = tuple(resolved)
        if any(t.depends_on for t in tasks):
            check_acyclic(tasks, members)

    # -- binding --------------------------------------------------------------------------

    def bind(self, t: Task) -> str:
        """Resolve provider, model, lane; attach the task to its scheduler group. Returns
        the lane."""
        pname = t.provider or self.default_provider
        provider = self.providers[pname]
        t.provider = pname
        if t.model is None:
            t.model = str((t.body or {}).get("model") or self._settings.model)
        agent = t.agent or DEFAULT_AGENT
        lane = t.lane or self._settings.agent_lanes.get(agent) or DEFAULT_LANE
        t.lane = lane
        lkey = provider.limiter_key(t.model)
        gkey = (lane, agent, lkey)
        g = self._groups.get(gkey)
        if g is None:
            meters = self._meters_for(lane, agent, pname, t.model, lkey)
            g = self._groups[gkey] = Group(
                gkey, meters, lef=self._lef, limiter=self.provider_meters[lkey]
            )
        t.group = g
        return lane

    def _meters_for(self, lane: str, agent: str, pname: str, model: str, lkey: str) -> list[Meter]:
        s = self._settings
        meters: list[Meter] = []
        lim = s.lanes.get(lane)
        if lim is not None and lim < s.concurrency:
            m = self._lane_meters.get(lane)
            if m is None:
                m = self._lane_meters[lane] = ConcurrencyMeter(f"lane {lane}", lim)
            meters.append(m)
        alim = s.agent_limits.get(agent)
        if alim is not None:
            am = self._agent_meters.get(agent)
            if am is None:
                am = self._agent_meters[agent] = ConcurrencyMeter(f"agent {agent}", alim)
            meters.append(am)
        pm = self.provider_meters.get(lkey)
        if pm is None:
            plim = s.limits.get(f"{pname}:{model}") or s.limits.get(pname) or ProviderLimits()
            pm = self.provider_meters[lkey] = ProviderMeter(lkey, plim, default_cap=s.concurrency)
        meters.append(pm)
        return meters

    def provider_of(self, t: Task) -> Provider:
        return self.providers[t.provider or self.default_provider]

    def prepare(self, t: Task, g: Group) -> float:
        """Ready `t` for its group's queue: estimate its tokens when a TPM budget needs
        them; returns its expected duration when the order needs one (else 0)."""
        limiter = g.limiter
        if t.est_tokens < 0 and limiter is not None and limiter.tpm is not None:
            t.est_tokens = estimate(t, self._settings.max_tokens)
        return self.expected_for(t) if g.lef else 0.0

    # -- durations ------------------------------------------------------------------------

    def expected_for(self, t: Task) -> float:
        if t.expected_s is not None:
            return t.expected_s
        agent = t.agent or DEFAULT_AGENT
        known = self._settings.expected_s.get(agent)
        if known is not None:
            return known
        return self._observed.get(agent, 0.0)

    def observe(self, t: Task, duration: float) -> None:
        agent = t.agent or DEFAULT_AGENT
        prev = self._observed.get(agent)
        self._observed[agent] = (
            duration if prev is None else prev * (1 - EWMA_WEIGHT) + duration * EWMA_WEIGHT
        )

    # -- what results depend on -----------------------------------------------------------

    def result_settings(self, tasks: Sequence[Task]) -> dict[str, Any]:
        """What a run's results depend on besides its tasks: kept with the run, compared on
        resume. (Concurrency, limits, timeouts and retries may change freely.)"""
        blueprints: dict[str, Any] = {}
        for t in tasks:
            meta = t.meta
            if meta:
                name = meta.get("blueprint")
                if name is not None:
                    blueprints[str(name)] = meta.get("blueprint_version")
        return {
            "providers": {
                name: {"type": type(p).__name__, "base_url": getattr(p, "base_url", None)}
                for name, p in sorted(self.providers.items())
            },
            "provider": self.default_provider,
            "model": self._settings.model,
            "max_tokens": self._settings.max_tokens,
            "blueprints": dict(sorted(blueprints.items())),
        }


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
