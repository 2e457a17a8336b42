"""Retry policy: classify an attempt's failure, decide whether and when to try again.

transient (timeout, connection, 429, 5xx, overloaded): exponential backoff with full
jitter, at least as long as the provider's Retry-After; permanent (400/401/403/404, a bug
in a callable): fail at once; content (empty, cut at the token limit, failing the
validator): one more attempt with a larger `max_tokens` or the validation error added.
Every retry counts inside the task's `attempts` and against the run's retry budget.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from fanout.errors import ConfigError, ProviderError
from fanout.tasks import ErrorInfo

DEFAULT_ATTEMPTS = 3
DEFAULT_BACKOFF_BASE_S = 0.5
DEFAULT_BACKOFF_CAP_S = 30.0
DEFAULT_BUDGET_FRACTION = 0.5  # retries per task, run-wide, unless a budget is given
MIN_RETRY_BUDGET = 10


@dataclass(slots=True, kw_only=True)
class RetryPolicy:
    """How failed attempts are retried. `budget` caps retries across the whole run
    (None: half the run's task count, at least 10)."""

    attempts: int = DEFAULT_ATTEMPTS
    backoff_base_s: float = DEFAULT_BACKOFF_BASE_S
    backoff_cap_s: float = DEFAULT_BACKOFF_CAP_S
    budget: int | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError(f"attempts={self.attempts}: at least 1 (1 means no retry)")
        if self.backoff_base_s < 0 or self.backoff_cap_s < 0:
            raise ConfigError("backoff times must not be negative")
        if self.budget is not None and self.budget < 0:
            raise ConfigError(f"budget={self.budget}: must not be negative")

    def budget_for(self, tasks: int) -> int:
        if self.budget is not None:
            return self.budget
        return max(MIN_RETRY_BUDGET, math.ceil(tasks * DEFAULT_BUDGET_FRACTION))

    def backoff(self, retry: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number `retry` (1-based): full jitter over an
        exponentially growing window, never shorter than the provider's Retry-After."""
        window = min(self.backoff_cap_s, self.backoff_base_s * (2 ** (retry - 1)))
        delay = rng.uniform(0.0, window)
        if retry_after is not None and retry_after > delay:
            delay = retry_after
        return delay


def describe(exc: BaseException) -> ErrorInfo:
    """The ErrorInfo the engine records for an exception raised by an attempt."""
    if isinstance(exc, ProviderError):
        return ErrorInfo(exc.error_class, exc.kind, exc.message, exc.status)
    # anything else escaped a provider or a user callable: a bug, not worth retrying
    return ErrorInfo("permanent", "exception", f"{type(exc).__name__}: {exc}")
