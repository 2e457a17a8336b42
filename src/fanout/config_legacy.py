"""The seed notes' `config/parallel_agents.yaml` (Story 8.14), read as a fanout config.

The original system's file has a `parallel_processing:` section and an
`aiomultiprocess_settings:` one. `load_config` hands a file that has either to `translate`,
which turns each key that means something here into the fanout setting it stands for, keeps
what only the Python facade (`fanout.ParallelAgentExecutor`) acts on as `SeedSettings`, and
says in `notes` which keys are ignored and why (a front end shows them once, as warnings).
Keys of `fanout.yaml` may sit beside the two sections (e.g. `providers:`); a setting given
both ways is refused.

Under `parallel_processing:`, seed key -> fanout:
- `enabled` false -> one call at a time (`concurrency: 1`);
- `default_max_concurrent` -> `concurrency`;
- `max_concurrent_limit`, `min_concurrent` -> the bounds of the facade's `max_concurrent`;
- `process_pool.task_timeout_seconds` -> `timeouts.attempt`;
- `task_queue.queue_type` -> priority: as always; fifo: the facade drops task priorities;
- `task_queue.max_queue_size` -> the facade refuses more unfinished tasks than this;
- `task_queue.priority_levels` -> the levels a facade task may name;
- `task_queue.task_retry_attempts` (retries) -> `retry.attempts` (attempts: one more);
- `task_queue.task_retry_delay_seconds` -> `retry.backoff_base_s`;
- `error_handling.continue_on_error` false (or `fallback_strategy: fail`) -> the facade
  cancels an execution at its first failed task;
- `error_handling.error_notification` -> the facade logs each failed task;
- `performance_monitoring.log_performance_data` -> the facade logs an execution's figures;
- `performance_monitoring.alert_on_slow_execution` + `slow_execution_threshold_seconds` ->
  the engine's `slow_after_s` (`TaskSlow` events; the facade logs them);
- `agent_configs.<agent>.max_concurrent` / `timeout_seconds` / `retry_attempts` ->
  `agents.<agent>.limit` / `timeout` / `attempts` (one more).

The seed file names no lanes, so a config read from it has none: each agent is bounded by its
own `max_concurrent` and the global one, as the original meant.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fanout.errors import ConfigError
from fanout.yamlcheck import explain

__all__ = ["SEED_SECTIONS", "SeedConfig", "SeedSettings", "is_seed_shape", "translate"]

SEED_SECTIONS = ("parallel_processing", "aiomultiprocess_settings")
PRIORITY_LEVELS = ("urgent", "high", "normal", "low")
FALLBACKS = ("retry", "skip", "fail")
#: the original's default threshold when `alert_on_slow_execution` names none
DEFAULT_SLOW_S = 60.0

_NO_PROCESSES = (
    "fanout makes LLM calls on one asyncio event loop, not in worker processes: the calls "
    "wait on the network, so processes would add cost and no speed"
)
_NO_CONTEXT = (
    "every agent call is a request of its own carrying its own prompt: there is no shared "
    "context to isolate or size"
)
_HINTS = {
    "limit": "in this file an agent's limit is `max_concurrent`",
    "timeout": "in this file an agent's timeout is `timeout_seconds`",
    "attempts": "in this file an agent's retries are `retry_attempts`",
    "concurrency": "in this file the global limit is `default_max_concurrent`",
}


class _Seed(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:
        """A section written with nothing under it (`task_queue:`) is an empty mapping."""
        if isinstance(data, dict):
            return {k: ({} if v is None and k in _SECTIONS else v) for k, v in data.items()}
        return data


_SECTIONS = frozenset(
    {
        *SEED_SECTIONS,
        "process_pool",
        "context_isolation",
        "task_queue",
        "error_handling",
        "performance_monitoring",
        "agent_configs",
    }
)


class SeedAgent(_Seed):
    max_concurrent: int | None = Field(default=None, ge=1)
    timeout_seconds: float | None = Field(default=None, gt=0)
    retry_attempts: int | None = Field(default=None, ge=0)
    context_size_mb: float | None = Field(default=None, ge=0)


class SeedPool(_Seed):
    """Worker processes: ignored but for the task timeout, which every attempt gets."""

    model_config = ConfigDict(extra="allow", strict=True, frozen=True)
    task_timeout_seconds: float | None = Field(default=None, gt=0)


class SeedQueue(_Seed):
    queue_type: Literal["fifo", "priority", "lifo"] = "priority"
    max_queue_size: int | None = Field(default=None, ge=1)
    priority_levels: list[Literal["urgent", "high", "normal", "low"]] | None = None
    task_retry_attempts: int | None = Field(default=None, ge=0)
    task_retry_delay_seconds: float | None = Field(default=None, ge=0)


class SeedErrors(_Seed):
    continue_on_error: bool = True
    error_isolation: bool = True
    fallback_strategy: str = "retry"
    error_notification: bool = False


class SeedMonitoring(_Seed):
    enabled: bool = True
    collect_metrics: bool = True
    log_performance_data: bool = False
    alert_on_slow_execution: bool = False
    slow_execution_threshold_seconds: float | None = Field(default=None, gt=0)


class SeedParallel(_Seed):
    enabled: bool = True
    default_max_concurrent: int | None = Field(default=None, ge=1)
    max_concurrent_limit: int | None = Field(default=None, ge=1)
    min_concurrent: int = Field(default=1, ge=1)
    process_pool: SeedPool | None = None
    context_isolation: dict[str, Any] | None = None
    task_queue: SeedQueue = Field(default_factory=SeedQueue)
    error_handling: SeedErrors = Field(default_factory=SeedErrors)
    performance_monitoring: SeedMonitoring = Field(default_factory=SeedMonitoring)
    agent_configs: dict[str, SeedAgent] = Field(default_factory=dict)


class SeedFile(_Seed):
    parallel_processing: SeedParallel = Field(default_factory=SeedParallel)
    aiomultiprocess_settings: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class SeedSettings:
    """What the seed file asks of the Python facade beyond the engine's settings."""

    max_concurrent_limit: int | None = None
    min_concurrent: int = 1
    max_queue_size: int | None = None
    priority_levels: tuple[str, ...] = PRIORITY_LEVELS
    use_priorities: bool = True  # queue_type fifo: one level, first in first out
    continue_on_error: bool = True
    error_notification: bool = False
    log_performance_data: bool = False
    slow_after_s: float | None = None


@dataclass(frozen=True, slots=True)
class SeedConfig:
    """A seed-shaped file translated: `data` in `fanout.yaml`'s shape, the facade's
    settings, and one line per group of ignored keys (with why)."""

    data: dict[str, Any]
    settings: SeedSettings
    notes: tuple[str, ...]
    #: fanout key path -> the seed key that set it, so a bad value is named as written
    origins: dict[tuple[str | int, ...], str] = field(default_factory=dict)


def is_seed_shape(data: dict[str, Any]) -> bool:
    return any(k in data for k in SEED_SECTIONS)


def translate(raw: dict[str, Any], *, source: str) -> SeedConfig:
    """`raw` (a parsed file holding the seed sections) as a fanout config. Raises one
    `ConfigError` naming the file and the key."""
    seed_part = {k: raw[k] for k in SEED_SECTIONS if k in raw}
    data = {k: v for k, v in raw.items() if k not in SEED_SECTIONS}
    try:
        seed = SeedFile.model_validate(seed_part)
    except ValidationError as exc:
        raise explain(exc, source=source, root=SeedFile, hints=_HINTS) from None
    pp = seed.parallel_processing
    put = _Putter(data, source)
    notes: list[str] = []

    concurrency = pp.default_max_concurrent if pp.enabled else 1
    if concurrency is not None:
        where = "default_max_concurrent" if pp.enabled else "enabled"
        put(("concurrency",), concurrency, f"parallel_processing.{where}")
    _check_bounds(pp, source)
    if "lanes" not in data:
        data["lanes"] = {}  # the file names no lanes: its own limits are the ones it meant

    ignored_processes = []
    if pp.process_pool is not None:
        if pp.process_pool.task_timeout_seconds is not None:
            put(
                ("timeouts", "attempt"),
                pp.process_pool.task_timeout_seconds,
                "parallel_processing.process_pool.task_timeout_seconds",
            )
        rest = sorted(
            set(pp.process_pool.model_fields_set) | set(pp.process_pool.model_extra or {})
        )
        rest = [k for k in rest if k != "task_timeout_seconds"]
        if rest:
            ignored_processes.append(f"parallel_processing.process_pool ({', '.join(rest)})")
    if "aiomultiprocess_settings" in raw:
        ignored_processes.append("aiomultiprocess_settings")
    if ignored_processes:
        notes.append(f"ignored {', '.join(ignored_processes)}: {_NO_PROCESSES}")

    ignored_context = []
    if pp.context_isolation is not None:
        ignored_context.append("parallel_processing.context_isolation")
    sized = [a for a, s in pp.agent_configs.items() if s.context_size_mb is not None]
    if sized:
        ignored_context.append(
            f"parallel_processing.agent_configs.<agent>.context_size_mb ({', '.join(sized)})"
        )
    if ignored_context:
        notes.append(f"ignored {', '.join(ignored_context)}: {_NO_CONTEXT}")

    q = pp.task_queue
    if q.queue_type == "lifo":
        notes.append(
            "ignored parallel_processing.task_queue.queue_type lifo: fanout starts the "
            "longest-waiting task of a priority first (newest first would starve the rest); "
            "read as priority"
        )
    if q.task_retry_attempts is not None:
        put(
            ("retry", "attempts"),
            q.task_retry_attempts + 1,
            "parallel_processing.task_queue.task_retry_attempts",
        )
    if q.task_retry_delay_seconds is not None:
        delay = q.task_retry_delay_seconds
        put(
            ("retry", "backoff_base_s"),
            delay,
            "parallel_processing.task_queue.task_retry_delay_seconds",
        )
        retry = data.get("retry")
        if isinstance(retry, dict) and "backoff_cap_s" not in retry and delay > 30:
            retry["backoff_cap_s"] = delay  # the default cap would shorten the asked delay

    e = pp.error_handling
    fallback = _fallback(e.fallback_strategy, source, notes)
    if not e.error_isolation:
        notes.append(
            "ignored parallel_processing.error_handling.error_isolation false: in fanout one "
            "task's failure never stops the others (continue_on_error: false stops the "
            "facade's execution at the first failure)"
        )
    m = pp.performance_monitoring
    if not (m.enabled and m.collect_metrics):
        off = [k for k in ("enabled", "collect_metrics") if not getattr(m, k)]
        notes.append(
            f"ignored parallel_processing.performance_monitoring.{'/'.join(off)} false: fanout "
            "always keeps a run's figures in its store (they cost nothing measurable)"
        )
    slow = None
    if m.alert_on_slow_execution:
        slow = m.slow_execution_threshold_seconds or DEFAULT_SLOW_S

    for agent, spec in pp.agent_configs.items():
        where = f"parallel_processing.agent_configs.{agent}"
        if spec.max_concurrent is not None:
            put(("agents", agent, "limit"), spec.max_concurrent, f"{where}.max_concurrent")
        if spec.timeout_seconds is not None:
            put(("agents", agent, "timeout"), spec.timeout_seconds, f"{where}.timeout_seconds")
        if spec.retry_attempts is not None:
            put(("agents", agent, "attempts"), spec.retry_attempts + 1, f"{where}.retry_attempts")

    settings = SeedSettings(
        max_concurrent_limit=pp.max_concurrent_limit,
        min_concurrent=pp.min_concurrent,
        max_queue_size=q.max_queue_size,
        priority_levels=tuple(q.priority_levels or PRIORITY_LEVELS),
        use_priorities=q.queue_type != "fifo",
        continue_on_error=e.continue_on_error and fallback != "fail",
        error_notification=e.error_notification,
        log_performance_data=m.log_performance_data,
        slow_after_s=slow,
    )
    return SeedConfig(data, settings, tuple(notes), dict(put.origins))


def _check_bounds(pp: SeedParallel, source: str) -> None:
    low, high, default = pp.min_concurrent, pp.max_concurrent_limit, pp.default_max_concurrent
    if high is not None and low > high:
        raise ConfigError(
            f"{source}: parallel_processing.min_concurrent {low} is over max_concurrent_limit "
            f"{high}; make min_concurrent the smaller"
        )
    if default is not None and not (low <= default and (high is None or default <= high)):
        bounds = f"{low}..{high}" if high is not None else f"at least {low}"
        raise ConfigError(
            f"{source}: parallel_processing.default_max_concurrent {default} is outside "
            f"min_concurrent..max_concurrent_limit ({bounds}); change one of them"
        )


def _fallback(value: str, source: str, notes: list[str]) -> str:
    """The fallback strategy a value names. The seed file writes the choices themselves,
    `retry|skip|fail`: that is read as the first, said in a note."""
    choices = [c.strip() for c in value.split("|")]
    unknown = [c for c in choices if c not in FALLBACKS]
    if unknown:
        raise ConfigError(
            f"{source}: parallel_processing.error_handling.fallback_strategy {value!r}: "
            f"{unknown[0]!r} is not one of {', '.join(FALLBACKS)}"
        )
    if len(choices) > 1:
        notes.append(
            f"parallel_processing.error_handling.fallback_strategy {value!r} lists choices: "
            f"read as {choices[0]!r}, the first (retry and skip: a failed task ends failed "
            "and the others go on; fail: the facade stops the execution at the first failure)"
        )
    return choices[0]


class _Putter:
    """Sets a key of the fanout-shaped data, refusing one the file also sets itself."""

    def __init__(self, data: dict[str, Any], source: str) -> None:
        self._data = data
        self._source = source
        self.origins: dict[tuple[str | int, ...], str] = {}

    def __call__(self, loc: tuple[str, ...], value: Any, seed_key: str) -> None:
        target = self._data
        for part in loc[:-1]:
            sub = target.setdefault(part, {})
            if sub is None:
                sub = target[part] = {}
            if not isinstance(sub, dict):  # the fanout key is wrong: Config says so
                return
            target = sub
        if loc[-1] in target:
            raise ConfigError(
                f"{self._source}: {'.'.join(loc)} and {seed_key} both set the same thing; "
                "keep one of them"
            )
        target[loc[-1]] = value
        self.origins[loc] = seed_key
