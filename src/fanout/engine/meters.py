"""The simple meters and budgets the provider meter (engine/limits.py) is built of: the
`Meter` protocol every limit answers to, a concurrency cap, a GCRA budget, and the limits
configured for a provider+model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from fanout.engine.shared import SharedAccount
from fanout.errors import ConfigError
from fanout.tasks import Task

INF = math.inf

DEFAULT_BURST_S = 0.5  # a client-side burst of half a second of budget: under any server's 1 s


#: why a meter holds a task back (`Meter.why`): the span kinds of engine/spans.py
WHY_SLOT = "lane"  # no free slot: a lane's, an agent's or the provider's concurrency
WHY_RPM = "rpm"  # the request budget (the configured RPM or the learned pace)
WHY_TPM = "tpm"
WHY_RETRY_AFTER = "retry_after"  # a pause the provider asked for
WHY_CIRCUIT = "circuit"  # the provider is down: only a probe now and then
#: a budget the rate headers say has fewer calls' worth left holds new calls (`header_hold`)
HOLD_CALLS = 1.0
HOLD_MAX_S = 60.0
#: a call is charged at most this many times the tokens calls used lately (`token_cost`)
TOKENS_MARGIN = 1.5


class Meter(Protocol):
    def wait_time(self, now: float, task: Task) -> float: ...

    def why(self, now: float) -> str:
        """Which of its limits holds tasks back now (asked only when `wait_time` > 0)."""
        ...

    def started(self, now: float, task: Task) -> None: ...

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None: ...


class ConcurrencyMeter:
    """At most `limit` tasks at once (a lane, an agent inside a lane)."""

    __slots__ = ("inflight", "limit", "name")

    def __init__(self, name: str, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"{name}: a concurrency limit must be at least 1, got {limit}")
        self.name = name
        self.limit = limit
        self.inflight = 0

    def wait_time(self, now: float, task: Task) -> float:
        return 0.0 if self.inflight < self.limit else INF

    def why(self, now: float) -> str:
        return WHY_SLOT

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
    #: the account these budgets belong to, shared with other processes on this machine
    account: SharedAccount | None = None

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                raise ConfigError(f"{name}={v}: a rate limit must be positive (or None for none)")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"concurrency={self.concurrency}: must be at least 1")


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

    def retune(self, rate_per_min: float, burst_s: float) -> None:
        """A new rate from now on (a new share of the account, a limit the provider stated):
        what is already charged keeps its time."""
        self.interval = 60.0 / rate_per_min
        self.tau = burst_s


def burst_for(rpm: float) -> float:
    # A server that allows bursts of one second of budget (or one request, whichever is more)
    # never rejects us while our burst plus one request's interval stays within that second.
    return min(DEFAULT_BURST_S, max(0.0, 1.0 - 60.0 / rpm))


def least(a: float | None, b: float | None) -> float | None:
    """The lower of two limits, either of which may be None (no limit)."""
    return b if a is None else a if b is None else min(a, b)


def model_of(key: str) -> str:
    """The model of a limiter key ("provider:model")."""
    return key.partition(":")[2] or key


def retuned(
    gcra: Gcra | None,
    per_min: float | None,
    holders: int,
    *,
    headroom: float,
    flat: bool = False,
    tokens: bool = False,
) -> Gcra | None:
    """A budget of `per_min` (configured, or stated by the provider's headers) retuned for
    `holders` processes sharing it: each its share, less `headroom` when several share
    (their bursts add up). No burst on a `flat` budget (one that admits none: then the
    headroom, alone too); a token budget keeps its half second (a call's tokens are an
    estimate: the burst absorbs it). What is already charged keeps its time."""
    if per_min is None:
        return None
    share = 1.0 if holders == 1 else (1.0 - headroom) / holders
    if tokens:
        rate, burst = per_min * share, DEFAULT_BURST_S
    elif flat:
        rate, burst = per_min * (1.0 - headroom) / holders, 0.0
    else:
        rate = per_min * share
        burst = burst_for(rate)
    if gcra is None:
        return Gcra(rate, burst)
    gcra.retune(rate, burst)
    return gcra


def token_cost(est_tokens: int, avg_tokens: float) -> float:
    """What a call is charged against a TPM budget when it starts: its estimate (the prompt
    and its output limit), but no more than `TOKENS_MARGIN` times what calls have used
    lately (`avg_tokens`): an output limit far above the answers would hold back calls the
    budget admits until each answer's usage gives the difference back."""
    est = float(max(est_tokens, 1))
    return min(est, TOKENS_MARGIN * avg_tokens) if avg_tokens > 0.0 else est


def header_hold(rate: dict[str, float], avg_tokens: float, retry_after: float | None) -> float:
    """Seconds the provider's rate headers (`providers.sdk.rate_headers`) say to hold new
    calls (0: none): a budget with less than `HOLD_CALLS` calls' worth left holds them until
    the `Retry-After` of a 429 that says so (when the provider admits the next one, whatever
    its shape), else for one call's interval at the stated rate (the reset says when the
    budget is whole again, which a sliding window at its rate never is)."""
    hold = 0.0
    per_call = max(avg_tokens, 1.0)
    kinds = (
        ("requests", 1.0, rate.get("requests_limit")),
        ("tokens", per_call, rate.get("tokens_limit")),
    )
    for name, need, per_min in kinds:
        left, reset = rate.get(f"{name}_remaining"), rate.get(f"{name}_reset")
        if left is None or left >= HOLD_CALLS * need:
            continue
        if retry_after is not None:
            wait = retry_after
        elif per_min:
            wait = need * 60.0 / per_min
        else:
            wait = reset or 0.0
        hold = max(hold, min(wait, HOLD_MAX_S))
    return hold
