"""Meters: small objects that say whether a task may start now, in the spirit of aiometer.

Each meter has three hooks: `wait_time(now, task)` (0 = may start now, a positive number =
try again in that many seconds, `inf` = wait until something finishes), `started(now, task)`
and `finished(now, task, outcome)`. A task starts only when every meter of its group says 0;
the scheduler composes lane + agent + provider meters per task (the global limit is the
worker pool itself). Calls wait for budget, never rejected for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from fanout.tasks import Task

INF = math.inf

#: outcome values passed to `finished`
OK = "ok"
RATE_LIMITED = "rate_limited"  # 429 or overloaded: AIMD backs off
ERROR = "error"

DEFAULT_BURST_S = 0.5  # a client-side burst of half a second of budget: under any server's 1 s
AIMD_DECREASE_FACTOR = 0.5
AIMD_COOLDOWN_S = 1.0  # one halving per second at most: a burst of 429s is one signal


class Meter(Protocol):
    def wait_time(self, now: float, task: Task) -> float: ...

    def started(self, now: float, task: Task) -> None: ...

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None: ...


class ConcurrencyMeter:
    """At most `limit` tasks at once (a lane, an agent inside a lane)."""

    __slots__ = ("inflight", "limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"{name}: a concurrency limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.inflight = 0

    def wait_time(self, now: float, task: Task) -> float:
        return 0.0 if self.inflight < self.limit else INF

    def started(self, now: float, task: Task) -> None:
        self.inflight += 1

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None:
        self.inflight -= 1

    def __repr__(self) -> str:
        return f"ConcurrencyMeter({self.name!r}, limit={self.limit}, inflight={self.inflight})"


@dataclass(slots=True, kw_only=True)
class ProviderLimits:
    """Budgets for one provider+model(+key). None means no limit of that kind."""

    rpm: float | None = None
    tpm: float | None = None
    concurrency: int | None = None
    adaptive: bool = True

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ValueError(f"{name}={v}: a rate limit must be positive (or None for none)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency={self.concurrency}: must be at least 1")


class Gcra:
    """Generic cell rate algorithm over a budget of `rate` units per minute.

    A request is admitted while the theoretical arrival time is within the burst tolerance
    of now; its cost is added after admission, so a request larger than the burst still
    goes through (and the ones after it wait for it).
    """

    __slots__ = ("interval", "tat", "tau")

    def __init__(self, rate_per_min: float, burst_s: float = DEFAULT_BURST_S) -> None:
        self.interval = 60.0 / rate_per_min  # seconds per unit
        self.tau = burst_s
        self.tat = 0.0

    def wait_time(self, now: float) -> float:
        w = self.tat - self.tau - now
        return w if w > 0.0 else 0.0

    def charge(self, now: float, units: float) -> None:
        self.tat = (self.tat if self.tat > now else now) + units * self.interval

    def refund(self, units: float) -> None:
        """Correct a charge (negative units add): reconcile an estimate with reported usage."""
        self.tat -= units * self.interval


class ProviderMeter:
    """One provider+model(+key): RPM and TPM budgets, a concurrency cap, adaptive concurrency
    (AIMD: halve on 429/overload, add 1/limit on success) and pauses asked by `Retry-After`."""

    __slots__ = (
        "_last_decrease",
        "adaptive",
        "cap",
        "decreases",
        "inflight",
        "key",
        "limit",
        "paused_until",
        "rpm",
        "tpm",
    )

    def __init__(self, key: str, limits: ProviderLimits, *, default_cap: int) -> None:
        self.key = key
        self.cap = float(limits.concurrency or default_cap)
        self.limit = self.cap
        self.adaptive = limits.adaptive
        self.rpm = Gcra(limits.rpm, _burst(limits.rpm)) if limits.rpm else None
        self.tpm = Gcra(limits.tpm, DEFAULT_BURST_S) if limits.tpm else None
        self.inflight = 0
        self.paused_until = 0.0
        self._last_decrease = -INF
        self.decreases = 0

    def wait_time(self, now: float, task: Task) -> float:
        if self.inflight >= int(self.limit):
            return INF
        w = self.paused_until - now
        if self.rpm is not None:
            w = max(w, self.rpm.wait_time(now))
        if self.tpm is not None:
            w = max(w, self.tpm.wait_time(now))
        return w if w > 0.0 else 0.0

    def started(self, now: float, task: Task) -> None:
        self.inflight += 1
        if self.rpm is not None:
            self.rpm.charge(now, 1.0)
        if self.tpm is not None:
            self.tpm.charge(now, max(task.est_tokens, 1))

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None:
        self.inflight -= 1
        if self.tpm is not None and tokens > 0:
            self.tpm.refund(task.est_tokens - tokens)
        if not self.adaptive:
            return
        if outcome == RATE_LIMITED:
            if now - self._last_decrease >= AIMD_COOLDOWN_S:
                self.limit = max(1.0, self.limit * AIMD_DECREASE_FACTOR)
                self._last_decrease = now
                self.decreases += 1
        elif outcome == OK and self.limit < self.cap:
            self.limit = min(self.cap, self.limit + 1.0 / self.limit)

    def pause(self, now: float, seconds: float) -> None:
        """Hold every call of this provider+model until `now + seconds` (Retry-After)."""
        self.paused_until = max(self.paused_until, now + seconds)

    def __repr__(self) -> str:
        return (
            f"ProviderMeter({self.key!r}, limit={self.limit:.1f}/{self.cap:.0f}, "
            f"inflight={self.inflight})"
        )


def _burst(rpm: float) -> float:
    # A server that allows bursts of one second of budget (or one request, whichever is more)
    # never rejects us while our burst plus one request's interval stays within that second.
    return min(DEFAULT_BURST_S, max(0.0, 1.0 - 60.0 / rpm))
