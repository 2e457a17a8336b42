"""How a run is run, kept with it in the store so a resume goes on the same way."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fanout.errors import ConfigError
from fanout.launch.setup import EngineChoice

T = TypeVar("T")
DEFAULT_GRACE_S = 10.0
_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(slots=True, kw_only=True)
class RunOptions:
    """The one options type of every launched run (batch, canvas, any front end).

    All of it is stored with the run (never a key: keys come from the environment) and
    `resume` uses it again, changed only by what is given explicitly as `Overrides`."""

    choice: EngineChoice = field(default_factory=EngineChoice)
    cache: bool = True
    cache_ttl_s: float | None = None  # None: the engine's default
    deadline_s: float | None = None  # None: the config's `timeouts.run`, if any
    grace_s: float = DEFAULT_GRACE_S  # how long calls in flight may finish after interrupt()
    max_cost_usd: float | None = None  # the run's cost cap (all its segments together)
    max_tokens: int | None = None  # the run's token cap

    def __post_init__(self) -> None:
        if self.max_cost_usd is not None and self.max_cost_usd <= 0:
            raise ConfigError(f"--max-cost {self.max_cost_usd:g}: must be positive")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError(f"--max-tokens {self.max_tokens}: must be positive")
        for name, value in (("--cache-ttl", self.cache_ttl_s), ("--deadline", self.deadline_s)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} {value:g}: must be positive")
        if self.grace_s < 0:
            raise ConfigError(f"--grace {self.grace_s:g}: must be 0 or more")

    def to_config(self) -> dict[str, Any]:
        """What goes into the run's stored config (JSON)."""
        c = dataclasses.asdict(self.choice)
        c["config"] = None if self.choice.config is None else str(self.choice.config.resolve())
        return {
            "choice": c,
            "options": {
                "cache": self.cache,
                "cache_ttl_s": self.cache_ttl_s,
                "deadline_s": self.deadline_s,
                "grace_s": self.grace_s,
                # caps only when set: a run without one stores what it always stored
                **({} if self.max_cost_usd is None else {"max_cost_usd": self.max_cost_usd}),
                **({} if self.max_tokens is None else {"max_tokens": self.max_tokens}),
            },
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> RunOptions:
        """The options a stored run was started with (defaults for what an older run lacks)."""
        raw = dict(config.get("choice") or {})
        known = {f.name for f in dataclasses.fields(EngineChoice)}
        raw = {k: v for k, v in raw.items() if k in known}
        if raw.get("config") is not None:
            raw["config"] = Path(raw["config"])
        opts = config.get("options")
        o: Mapping[str, Any] = opts if isinstance(opts, Mapping) else {}
        return cls(
            choice=EngineChoice(**raw),
            cache=bool(o.get("cache", True)),
            cache_ttl_s=o.get("cache_ttl_s"),
            deadline_s=o.get("deadline_s"),
            grace_s=float(o.get("grace_s", DEFAULT_GRACE_S)),
            max_cost_usd=o.get("max_cost_usd"),
            max_tokens=o.get("max_tokens"),
        )

    def updated(self, changes: Overrides) -> RunOptions:
        """These options with what `changes` gives explicitly."""
        return RunOptions(
            choice=self.choice.updated(changes.choice),
            cache=self.cache if changes.cache is None else changes.cache,
            cache_ttl_s=self.cache_ttl_s if changes.cache_ttl_s is None else changes.cache_ttl_s,
            deadline_s=self.deadline_s if changes.deadline_s is None else changes.deadline_s,
            grace_s=self.grace_s if changes.grace_s is None else changes.grace_s,
            max_cost_usd=_pick(self.max_cost_usd, changes.max_cost_usd),
            max_tokens=_pick(self.max_tokens, changes.max_tokens),
        )


@dataclass(slots=True, kw_only=True)
class Overrides:
    """What to change when resuming a run; None (and the choice's None fields) keeps what
    the run was started with."""

    choice: EngineChoice = field(default_factory=EngineChoice)
    cache: bool | None = None
    cache_ttl_s: float | None = None
    deadline_s: float | None = None
    grace_s: float | None = None
    max_cost_usd: float | None = None
    max_tokens: int | None = None


def _pick(kept: T | None, changed: T | None) -> T | None:
    return kept if changed is None else changed


def parse_duration(flag: str, value: str | None) -> float | None:
    """Seconds from "3600", "90s", "15m", "12h" or "7d"; `ConfigError` naming `flag`."""
    if value is None:
        return None
    v = value.strip().lower()
    scale = _DURATION_UNITS.get(v[-1:])
    try:
        n = float(v[:-1] if scale is not None else v) * (scale or 1.0)
    except ValueError:
        raise ConfigError(f"{flag} {value!r}: give seconds or a number with s, m, h or d") from None
    if n <= 0:
        raise ConfigError(f"{flag} {value!r}: must be positive")
    return n
