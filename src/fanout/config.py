"""`fanout.yaml`: providers, lanes, agents, retries, timeouts (spec C9), in the shape of the
seed notes' `parallel_agents.yaml` where that makes sense (their `agent_configs.<name>.
max_concurrent` is `agents.<name>.limit` here, `timeout_seconds` is `timeout`).

```yaml
default_provider: openai
concurrency: 16
providers:
  openai: {base_url: https://api.openai.com/v1, api_key_env: OPENAI_API_KEY,
           model: gpt-4o-mini, rpm: 500, tpm: 200000}
lanes: {computation_intensive: 2, io_intensive: 4, lightweight: 6}
agents:
  oral-explanation: {limit: 6}
retry: {attempts: 3, backoff_base_s: 0.5, backoff_cap_s: 30, budget: 200}
timeouts: {attempt: 120, idle: 30, run: 3600}
scheduling: {order: longest_first, aging_s: 60}
```

`lanes` written in the file replace the default lanes (the seed notes' three); other
sections keep the defaults of the keys they leave out. Environment variables
override the file: FANOUT_CONFIG (the file), FANOUT_CONCURRENCY, FANOUT_PROVIDER,
FANOUT_TIMEOUT (seconds per attempt), FANOUT_ATTEMPTS. Keys never appear in the file:
`api_key_env` names the environment variable that holds one.

The seed notes' own file, `config/parallel_agents.yaml` (a `parallel_processing:` section),
loads too: `config_legacy.py` maps each of its keys onto these and says which it ignores.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypedDict

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from fanout.engine.budget import DEFAULT_PRICES, Price
from fanout.engine.limits import ProviderLimits
from fanout.engine.retry import (
    DEFAULT_ATTEMPTS,
    DEFAULT_BACKOFF_BASE_S,
    DEFAULT_BACKOFF_CAP_S,
    RetryPolicy,
)
from fanout.engine.settings import DEFAULT_AGING_S, DEFAULT_CONCURRENCY, DEFAULT_TIMEOUT_S
from fanout.errors import ConfigError
from fanout.providers.spec import PROVIDER_TYPES, ProviderSpec
from fanout.yamlcheck import Loc, explain, parse_yaml, show

if TYPE_CHECKING:
    from fanout.agents.blueprint import Blueprint
    from fanout.config_legacy import SeedConfig, SeedSettings

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_LANES",
    "AgentSpec",
    "Config",
    "EngineKwargs",
    "ProviderSpec",
    "RetrySpec",
    "SchedulingSpec",
    "TimeoutSpec",
    "config_from",
    "load_config",
    "read_config_data",
]

CONFIG_FILE = "fanout.yaml"
#: calls in flight at once, at most: each holds a worker, a connection and a file descriptor
#: or two; far past what any provider allows one client
MAX_CONCURRENCY = 100_000
#: the seed notes' lanes and their limits
DEFAULT_LANES: dict[str, int] = {"computation_intensive": 2, "io_intensive": 4, "lightweight": 6}
IMPLICIT_PROVIDER = "sim"
#: environment variable -> (key path, type)
ENV_OVERRIDES: dict[str, tuple[Loc, type]] = {
    "FANOUT_CONCURRENCY": (("concurrency",), int),
    "FANOUT_PROVIDER": (("default_provider",), str),
    "FANOUT_TIMEOUT": (("timeouts", "attempt"), float),
    "FANOUT_ATTEMPTS": (("retry", "attempts"), int),
}
CONFIG_ENV = "FANOUT_CONFIG"

_HINTS = {
    "max_concurrent": "the seed notes' max_concurrent is `limit` here",
    "timeout_seconds": "the seed notes' timeout_seconds is `timeout` here (seconds)",
    "retry_attempts": "use `attempts` (all attempts, the first included)",
    "api_key": (
        "keys are never written in the config; put the key in an environment variable and "
        "give that variable's name as `api_key_env`"
    ),
    "agent_configs": "the seed notes' agent_configs is `agents` here",
}

Limit = Annotated[int, Field(ge=1)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class AgentSpec(_Section):
    """Settings for one agent; they override its blueprint's."""

    lane: str | None = None
    limit: int | None = Field(default=None, ge=1)
    expected_s: float | None = Field(default=None, gt=0)
    provider: str | None = None
    model: str | None = None
    timeout: float | None = Field(default=None, gt=0)
    attempts: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)


class RetrySpec(_Section):
    attempts: int = Field(default=DEFAULT_ATTEMPTS, ge=1)
    backoff_base_s: float = Field(default=DEFAULT_BACKOFF_BASE_S, ge=0)
    backoff_cap_s: float = Field(default=DEFAULT_BACKOFF_CAP_S, ge=0)
    budget: int | None = Field(default=None, ge=0)


class TimeoutSpec(_Section):
    attempt: float | None = Field(default=DEFAULT_TIMEOUT_S, gt=0)
    idle: float | None = Field(default=None, gt=0)
    run: float | None = Field(default=None, gt=0)


class PriceSpec(_Section):
    """Dollars per million tokens of one model."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class BudgetSpec(_Section):
    """What one run may spend at most (`--max-cost`, `--max-tokens` override it)."""

    max_cost: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)


class SchedulingSpec(_Section):
    order: Literal["fifo", "longest_first"] = "fifo"
    aging_s: float = Field(default=DEFAULT_AGING_S, gt=0)


class EngineKwargs(TypedDict, total=False):
    """Keyword arguments for `fanout.Engine` (everything but `providers` and `store`)."""

    provider: str
    model: str
    concurrency: int
    lanes: dict[str, int]
    agent_lanes: dict[str, str]
    agent_limits: dict[str, int]
    limits: dict[str, ProviderLimits]
    retry: RetryPolicy
    timeout: float | None
    idle_timeout: float | None
    aging_s: float
    order: Literal["fifo", "longest_first"]
    expected_s: dict[str, float]
    prices: dict[str, Price]
    slow_after_s: float | None


class Config(_Section):
    """A validated `fanout.yaml`. Build with `load_config`; `Config()` is all defaults."""

    concurrency: int = Field(default=DEFAULT_CONCURRENCY, ge=1, le=MAX_CONCURRENCY)
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    default_provider: str | None = None
    lanes: dict[str, Limit] = Field(default_factory=lambda: dict(DEFAULT_LANES))
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeouts: TimeoutSpec = Field(default_factory=TimeoutSpec)
    scheduling: SchedulingSpec = Field(default_factory=SchedulingSpec)
    #: model -> price, over the shipped table (`fanout.engine.budget.DEFAULT_PRICES`)
    prices: dict[str, PriceSpec] = Field(default_factory=dict)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    #: where provider calls run, when no --backend / --ray-address is given
    backend: Literal["local", "ray"] | None = None
    ray_address: str | None = None
    _source: Path | None = PrivateAttr(default=None)
    _seed: SeedConfig | None = PrivateAttr(default=None)

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """An empty section (`lanes:` with nothing under it) is an empty mapping; a provider
        named after a type (`openai:`) has that type unless it says otherwise."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in (
            "providers",
            "lanes",
            "agents",
            "retry",
            "timeouts",
            "scheduling",
            "prices",
            "budget",
        ):
            if key in data and data[key] is None:
                data[key] = {}
        providers = data.get("providers")
        if isinstance(providers, dict):
            named: dict[Any, Any] = {}
            for name, spec in providers.items():
                if isinstance(name, str) and not _PROVIDER_NAME.match(name):
                    raise ValueError(
                        f"providers: {name!r} is not a usable provider name "
                        "(letters, digits, '.', '_' and '-')"
                    )
                if name in PROVIDER_TYPES and spec is None:
                    spec = {}
                if name in PROVIDER_TYPES and isinstance(spec, dict) and "type" not in spec:
                    spec = {"type": name, **spec}
                named[name] = spec
            data["providers"] = named
        return data

    @field_validator("default_provider")
    @classmethod
    def _known_default(cls, value: str | None, info: ValidationInfo) -> str | None:
        providers = info.data.get("providers")
        if value is None or providers is None:
            return value
        names = list(providers) or [IMPLICIT_PROVIDER]
        if value not in names:
            raise ValueError(
                f"{value!r} is not a configured provider (configured: {', '.join(names)})"
            )
        return value

    @model_validator(mode="after")
    def _references(self) -> Config:
        names = list(self.provider_specs())
        for agent, spec in self.agents.items():
            if spec.lane is not None and spec.lane not in self.lanes:
                lanes = ", ".join(self.lanes) or "none"
                raise ValueError(
                    f"agents.{agent}.lane: {spec.lane!r} is not a lane of this config "
                    f"(lanes: {lanes}); add it under `lanes` with a limit"
                )
            if spec.provider is not None and spec.provider not in names:
                raise ValueError(
                    f"agents.{agent}.provider: {spec.provider!r} is not a configured provider "
                    f"(configured: {', '.join(names)})"
                )
        return self

    @property
    def source(self) -> Path | None:
        """The file this config was read from (None: defaults and environment only)."""
        return self._source

    def read_from(self, path: Path | None, seed: SeedConfig | None = None) -> Config:
        """Note the file this config was read from (and, for the seed notes' file, what it
        was translated from); returns it."""
        self._source = path
        self._seed = seed
        return self

    @property
    def seed_settings(self) -> SeedSettings | None:
        """What a seed-shaped file (`parallel_agents.yaml`) asks of the Python facade."""
        return None if self._seed is None else self._seed.settings

    @property
    def notes(self) -> tuple[str, ...]:
        """Warnings for the user, once: the seed file's keys that are ignored here, and why."""
        return () if self._seed is None else self._seed.notes

    def provider_specs(self) -> dict[str, ProviderSpec]:
        """The providers to build, by name; the simulator alone when none is configured."""
        return dict(self.providers) or {IMPLICIT_PROVIDER: ProviderSpec(type="sim")}

    @property
    def default_provider_name(self) -> str:
        return self.default_provider or next(iter(self.provider_specs()))

    def engine_kwargs(self) -> EngineKwargs:
        """Keyword arguments for `Engine(**config.engine_kwargs(), providers=...)`."""
        specs = self.provider_specs()
        kw: EngineKwargs = {
            "provider": self.default_provider_name,
            "concurrency": self.concurrency,
            "lanes": dict(self.lanes),
            "agent_lanes": {a: s.lane for a, s in self.agents.items() if s.lane is not None},
            "agent_limits": {a: s.limit for a, s in self.agents.items() if s.limit is not None},
            "limits": {n: lim for n, s in specs.items() if (lim := provider_limits(s)) is not None},
            "retry": RetryPolicy(
                attempts=self.retry.attempts,
                backoff_base_s=self.retry.backoff_base_s,
                backoff_cap_s=self.retry.backoff_cap_s,
                budget=self.retry.budget,
            ),
            "timeout": self.timeouts.attempt,
            "idle_timeout": self.timeouts.idle,
            "aging_s": self.scheduling.aging_s,
            "order": self.scheduling.order,
            "expected_s": {
                a: s.expected_s for a, s in self.agents.items() if s.expected_s is not None
            },
        }
        if self.seed_settings is not None and self.seed_settings.slow_after_s is not None:
            kw["slow_after_s"] = self.seed_settings.slow_after_s
        if self.prices:  # over the shipped table (the engine's default without any)
            kw["prices"] = {
                **DEFAULT_PRICES,
                **{m: Price(p.input, p.output) for m, p in self.prices.items()},
            }
        model = specs[self.default_provider_name].model
        if model is not None:
            kw["model"] = model
        return kw

    def submit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `Engine.submit` (the whole-run deadline)."""
        return {} if self.timeouts.run is None else {"deadline_s": self.timeouts.run}

    def apply_agents(self, blueprints: Mapping[str, Blueprint]) -> dict[str, Blueprint]:
        """`blueprints` with `agents.<name>` settings applied over their front matter, and
        the model of a blueprint's provider filled in when the blueprint names none."""
        specs = self.provider_specs()
        out: dict[str, Blueprint] = {}
        for name, bp in blueprints.items():
            spec = self.agents.get(name)
            if spec is not None:
                bp = bp.with_overrides(**spec.model_dump(exclude={"limit"}))
            if bp.provider is not None and bp.model is None:
                pspec = specs.get(bp.provider)
                if pspec is None:
                    raise ConfigError(
                        f"{bp.source or name}: provider: {bp.provider!r} is not a configured "
                        f"provider (configured: {', '.join(specs)})"
                    )
                bp = bp.with_overrides(model=pspec.model)
            out[name] = bp
        return out


_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\Z")


def load_config(
    path: Path | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Read `path`, else `$FANOUT_CONFIG`, else `./fanout.yaml` if there is one, else use
    the defaults; then apply the environment overrides. Raises one `ConfigError`."""
    env = os.environ if env is None else env
    if path is None and env.get(CONFIG_ENV):
        path = Path(env[CONFIG_ENV])
    if path is None:
        found = (cwd if cwd is not None else Path.cwd()) / CONFIG_FILE
        path = found if found.is_file() else None
    data: dict[str, Any] = {} if path is None else _read(path)
    return config_from(data, path=path, env=env)


def config_from(
    data: Mapping[str, Any], *, path: Path | None = None, env: Mapping[str, str] | None = None
) -> Config:
    """A `Config` from parsed YAML (`fanout.yaml`'s shape or the seed notes' file), e.g. a
    file's contents a caller has changed; `path` names it in messages. The environment's
    overrides apply, as for `load_config`."""
    env = os.environ if env is None else env
    where = str(path) if path is not None else "configuration (no config file)"
    data = dict(data)
    seed: SeedConfig | None = None
    if data:  # (no config at all: the seed notes' shape is not loaded to find that out)
        from fanout.config_legacy import is_seed_shape, translate

        if is_seed_shape(data):  # the seed notes' parallel_agents.yaml
            seed = translate(data, source=where)
            data = seed.data
    origins = {**(seed.origins if seed is not None else {}), **_apply_env(data, env)}
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise explain(exc, source=where, root=Config, hints=_HINTS, origins=origins) from None
    return config.read_from(path, seed)


def read_config_data(path: Path) -> dict[str, Any]:
    """A config file's parsed contents, unchecked (`ConfigError` when it cannot be read)."""
    return _read(path)


def _read(path: Path) -> dict[str, Any]:
    try:
        # a FIFO or a device would block the read (or never end): only a regular file
        if not stat.S_ISREG(path.stat().st_mode) and not path.is_dir():
            raise ConfigError(f"{path}: not a regular file (a pipe or a device); give a YAML file")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    loaded = parse_yaml(text, source=str(path))
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path}: the file must be a mapping of keys (concurrency, providers, lanes, "
            f"agents, ...), got {'a list' if isinstance(loaded, list) else show(loaded)}"
        )
    return loaded


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> dict[Loc, str]:
    """Put the environment's overrides into `data`; returns key path -> variable name."""
    origins: dict[Loc, str] = {}
    for var, (loc, kind) in ENV_OVERRIDES.items():
        raw = (env.get(var) or "").strip()
        if not raw:
            continue
        value: Any = raw
        if kind is not str:
            try:
                value = kind(raw)
            except ValueError:
                what = "a whole number" if kind is int else "a number"
                raise ConfigError(f"{var}={raw!r}: not {what}") from None
        target = data
        for part in loc[:-1]:
            sub = target.setdefault(str(part), {})
            if not isinstance(sub, dict):  # the file's section is wrong: validation says so
                break
            target = sub
        else:
            target[str(loc[-1])] = value
            origins[loc] = var
    return origins


def provider_limits(spec: ProviderSpec) -> ProviderLimits | None:
    """The engine's budgets for one provider spec, or None when none is configured."""
    if spec.rpm is None and spec.tpm is None and spec.concurrency is None:
        return None if spec.adaptive is None else ProviderLimits(adaptive=spec.adaptive)
    return ProviderLimits(
        rpm=spec.rpm,
        tpm=spec.tpm,
        concurrency=spec.concurrency,
        adaptive=True if spec.adaptive is None else spec.adaptive,
    )
