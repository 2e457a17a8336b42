"""`EngineSettings`: everything an engine is configured with, keyword-only and checked once.

Defaults are module constants so the config file, the CLI and the engine share them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from fanout.engine.budget import DEFAULT_PRICES, Price
from fanout.engine.limits import ProviderLimits
from fanout.engine.retry import RetryPolicy
from fanout.errors import ConfigError

DEFAULT_CONCURRENCY = 16
#: beyond this the worker pool itself costs seconds to build; nobody has that many sockets
MAX_CONCURRENCY = 100_000
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_TOKENS = 1024
DEFAULT_AGING_S = 60.0
DEFAULT_CACHE_TTL_S = 30 * 86400.0
DEFAULT_MODEL = "sim-1"

Order = Literal["fifo", "longest_first"]


@dataclass(frozen=True, slots=True, kw_only=True)
class EngineSettings:
    """How an engine schedules: the global limit, lanes, provider budgets, retries, timeouts.

    `lanes` maps a lane to its limit, `agent_lanes` an agent to its lane, `agent_limits` an
    agent to its limit inside the lane, `limits` a provider name or "provider:model" to its
    `ProviderLimits`. `order` is "fifo" or "longest_first" (by `Task.expected_s`, the
    agent's `expected_s`, or its observed mean latency)."""

    provider: str | None = None  # the default provider's name (None: the first given)
    model: str = DEFAULT_MODEL
    concurrency: int = DEFAULT_CONCURRENCY
    lanes: Mapping[str, int] = field(default_factory=dict)
    agent_lanes: Mapping[str, str] = field(default_factory=dict)
    agent_limits: Mapping[str, int] = field(default_factory=dict)
    limits: Mapping[str, ProviderLimits] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: float | None = DEFAULT_TIMEOUT_S
    idle_timeout: float | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    aging_s: float = DEFAULT_AGING_S
    order: Order = "fifo"
    expected_s: Mapping[str, float] = field(default_factory=dict)
    slow_after_s: float | None = None
    cache: bool = False
    cache_ttl_s: float | None = DEFAULT_CACHE_TTL_S
    seed: int | None = None
    #: dollars per million tokens by model (prefix match), for spend and `max_cost_usd`
    prices: Mapping[str, Price] = field(default_factory=lambda: dict(DEFAULT_PRICES))

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise ConfigError(
                f"concurrency={self.concurrency}: must be between 1 and {MAX_CONCURRENCY:,}"
            )
        if self.order not in ("fifo", "longest_first"):
            raise ConfigError(f"order={self.order!r}: use 'fifo' or 'longest_first'")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"timeout={self.timeout}: must be positive (or None for none)")
        if self.idle_timeout is not None and self.idle_timeout <= 0:
            raise ConfigError(f"idle_timeout={self.idle_timeout}: must be positive")
        if self.aging_s <= 0:
            raise ConfigError(f"aging_s={self.aging_s}: must be positive")
        if self.max_tokens < 1:
            raise ConfigError(f"max_tokens={self.max_tokens}: must be at least 1")
        if self.cache_ttl_s is not None and self.cache_ttl_s <= 0:
            raise ConfigError(
                f"cache_ttl_s={self.cache_ttl_s}: must be positive (or None: no expiry)"
            )
        for name, lim in self.lanes.items():
            if lim < 1:
                raise ConfigError(f"lane {name!r}: limit {lim} must be at least 1")
        for name, lim in self.agent_limits.items():
            if lim < 1:
                raise ConfigError(f"agent {name!r}: limit {lim} must be at least 1")
