"""Meters: small objects that say whether a task may start now, in the spirit of aiometer.

Each meter has three hooks: `wait_time(now, task)` (0 = may start now, a positive number =
try again in that many seconds, `inf` = wait until something finishes), `started(now, task)`
and `finished(now, task, outcome)`. A task starts only when every meter of its group says 0;
the scheduler composes lane + agent + provider meters per task (the global limit is the
worker pool itself). Calls wait for budget, never rejected for it.
"""

from __future__ import annotations

import math
import random
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from fanout.errors import ConfigError
from fanout.tasks import Task

INF = math.inf

#: outcome values passed to `finished`
OK = "ok"
RATE_LIMITED = "rate_limited"  # a 429 with Retry-After: acts through `pause`, not AIMD
OVERLOADED = "overloaded"  # a 529, or a 429 that names no wait: AIMD halves the limit
DOWN = "down"  # could not connect, connection lost, 5xx, timeout: counts toward the circuit
ERROR = "error"  # the provider answered, but not usably (4xx, bad content)
NEUTRAL = "neutral"  # no verdict on the provider (the attempt was cancelled or interrupted)
NOT_SENT = "not_sent"  # picked but never sent (over its run's cap): its charges are refunded

DEFAULT_BURST_S = 0.5  # a client-side burst of half a second of budget: under any server's 1 s
AIMD_DECREASE_FACTOR = 0.5
AIMD_COOLDOWN_S = 1.0  # one halving per second at most: a burst of 429s is one signal
#: the learned request rate (see `ProviderMeter`): successes are counted over this window...
RATE_WINDOW_S = 1.0
#: ...or, when it holds fewer, over the span of this many (fewer in all: nothing to learn)
RATE_MIN_SAMPLES = 8
#: after a 429, pace at this share of the rate the provider was admitting calls at
RATE_DECREASE_FACTOR = 0.9
#: then climb: each success adds this many calls/s (+10 % a second while paced) back up to
#: the rate last admitted...
RATE_INCREASE = 0.1
#: ...and only this many above it (+1 % a second), so 429s come seldom
RATE_PROBE = 0.01
#: until a full window has been measured (the start of a run, when the first count is short)
#: the climb doubles the pace every second
RATE_SLOW_START = 1.0
#: one cut per window at most (but for the end of slow start): the count must catch up with
#: the last cut, and stray 429s must not ratchet the pace down
RATE_COOLDOWN_S = 1.0
#: a Retry-After that reopens within this many calls (at the admitted rate) marks a rate limit
RATE_EDGE_CALLS = 2.0
#: a 429 while the admitted rate is under this share of the last learned limit is noise: it
#: teaches no lower rate
RATE_NOISE_SHARE = 0.5
#: a long Retry-After pauses every call only when at least this share of the calls that
#: ended lately were 429s: a stray 429 amid successes holds back its own task alone
PAUSE_SHARE = 0.5
#: this many provider failures in a row (connection, 5xx, 529, timeout) open the circuit; an
#: answer to a call sent before the first of them does not break the row (it is old news)
CIRCUIT_FAILURES = 10
#: while open, one probe at a time, the first after this long, doubling up to the cap
#: (with jitter): an outage costs a probe now and then, not the tasks' attempts
CIRCUIT_PROBE_BASE_S = 0.5
CIRCUIT_PROBE_CAP_S = 30.0
#: a provider that never answered and failed this many probes cannot be reached: its calls
#: fail at once instead of waiting for it
UNREACHABLE_PROBES = 3


#: why a meter holds a task back (`Meter.why`): the span kinds of engine/spans.py
WHY_SLOT = "lane"  # no free slot: a lane's, an agent's or the provider's concurrency
WHY_RPM = "rpm"  # the request budget (the configured RPM or the learned pace)
WHY_TPM = "tpm"
WHY_RETRY_AFTER = "retry_after"  # a pause the provider asked for
WHY_CIRCUIT = "circuit"  # the provider is down: only a probe now and then


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


class Circuit:
    """Whether a provider is down. `CIRCUIT_FAILURES` failures in a row (could not connect,
    connection lost, 5xx, 529, timeout) open it: nothing new is sent but one probe at a time,
    the first after `CIRCUIT_PROBE_BASE_S`, then at doubling intervals (full jitter, capped at
    `CIRCUIT_PROBE_CAP_S`); the first call that gets an answer closes it. A provider that never
    answered and failed `UNREACHABLE_PROBES` probes is `unreachable`: the engine then fails
    its calls at once, with one message, instead of waiting for it."""

    __slots__ = (
        "_next_probe",
        "_probe",
        "_rng",
        "_row_since",
        "answered",
        "down_since",
        "fails",
        "probes",
    )

    def __init__(self, seed: int | None = None) -> None:
        self.fails = 0
        self._row_since = 0.0  # when the current row of failures began
        self.down_since: float | None = None
        self._next_probe = 0.0
        self._probe: int | None = None  # id() of the task whose call is the probe
        self.probes = 0  # failed probes since the circuit opened
        self.answered = False  # whether the provider ever answered a call
        self._rng = random.Random(seed)

    @property
    def unreachable(self) -> bool:
        return (
            self.down_since is not None
            and not self.answered
            and (self.probes >= UNREACHABLE_PROBES)
        )

    def wait_time(self, now: float) -> float:
        if self.down_since is None or self.unreachable:
            return 0.0
        if self._probe is not None:
            return INF  # until the probe's answer
        w = self._next_probe - now
        return w if w > 0.0 else 0.0

    def started(self, task: Task) -> None:
        if self.down_since is not None and self._probe is None:
            self._probe = id(task)

    def finished(self, now: float, task: Task, outcome: str, started: float) -> bool:
        """Count the outcome of a call sent at `started`; True when the circuit opened or
        closed. Connection failures, 5xx and timeouts are failures; a 529 (or a 429 that names
        no wait) is a failure too, but an answer: a provider that answers is never given up on
        as unreachable."""
        probe = self._probe is not None and self._probe == id(task)
        if probe:
            self._probe = None
        if outcome in (DOWN, OVERLOADED):
            if outcome == OVERLOADED:
                self.answered = True
            if self.fails == 0:
                self._row_since = now
            self.fails += 1
            if self.down_since is None:
                if self.fails >= CIRCUIT_FAILURES:
                    self.down_since = now
                    self.probes = 0
                    self._probe = None
                    self._schedule(now)
                    return True
            elif probe:
                self.probes += 1
                self._schedule(now)
            return False
        if outcome in (NEUTRAL, NOT_SENT):
            return False
        # the provider answered (OK, a 429 naming its wait, a 4xx, bad content)
        self.answered = True
        if started < self._row_since:
            return False  # sent before the row of failures began: it says nothing of now
        self.fails = 0
        if self.down_since is not None:
            self.down_since = None
            self.probes = 0
            self._probe = None  # a probe still out (another call answered first) is moot
            return True
        return False

    def _schedule(self, now: float) -> None:
        window = min(CIRCUIT_PROBE_CAP_S, CIRCUIT_PROBE_BASE_S * 2.0**self.probes)
        self._next_probe = now + window * self._rng.uniform(0.5, 1.0)


class ProviderMeter:
    """One provider+model(+key): RPM and TPM budgets, a concurrency cap, pauses asked by
    `Retry-After`, and when `adaptive`:

    - adaptive concurrency (AIMD: halve on 429/overload, add 1/limit on success);
    - a learned request rate. A 429 whose Retry-After reopens the provider within about one
      call (`RATE_EDGE_CALLS` at the rate it was admitting our calls) says that its request
      budget is spent, and the rate it was admitting our calls at is the best measure of that
      budget: our successes over the last `RATE_WINDOW_S`, or over the last
      `RATE_MIN_SAMPLES` when they are fewer. So then (once per `RATE_COOLDOWN_S`) the meter
      starts spacing calls evenly at `RATE_DECREASE_FACTOR` times that rate, climbs back
      quickly to it (`RATE_INCREASE` calls/s per success), then slowly above it
      (`RATE_PROBE`) until the next such 429. At the start of a run the first count covers
      less than a window, so until a full one is measured the climb is `RATE_SLOW_START`,
      until a call sent at the new pace is rejected (a cut then, whatever the cooldown).
      A cut never raises the pace: a window that still holds a first burst counts more
      than the provider admits, so the basis is the lower of that count and the pace.

    Only the 429s of calls sent after the last cut count: those already in flight then say
    nothing about the new pace. (`pause` follows the `finished` of the call that was told to
    wait; the meter keeps each call's start for this.)

    Without the learned rate, every Retry-After pause ends with all the queued calls starting
    at once, and all but one of them are rejected again: most requests become 429s and tasks
    run out of attempts. Concurrency cannot do this job: one call at a time is already over a
    budget of 20 calls/s when an answer takes less than 50 ms. A long Retry-After (an
    overloaded server, a token budget, "come back in a second") teaches no rate: were the
    rate cut after each, the pauses would drag the measured rate, and so the pace, down.
    """

    __slots__ = (
        "_ceiling",
        "_first_ok",
        "_last_cut",
        "_last_decrease",
        "_limited_start",
        "_pace_tat",
        "_recent",
        "_rej_n",
        "_rej_prev",
        "_starts",
        "_win_n",
        "_win_prev",
        "_win_start",
        "adaptive",
        "cap",
        "circuit",
        "decreases",
        "inflight",
        "key",
        "limit",
        "pace_rate",
        "paused_until",
        "rate_cuts",
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
        self.pace_rate: float | None = None  # learned calls/s; None until the first 429
        self._pace_tat = 0.0  # when the pacer lets the next call start
        self._last_cut = -INF
        self._ceiling = INF  # the admitted rate measured at the last cut (INF: unknown)
        self._first_ok = INF
        self.rate_cuts = 0
        self._starts: dict[int, float] = {}  # id(task) -> start of its call, once pacing
        self._limited_start: float | None = None  # start of the call last told to wait
        # successes per RATE_WINDOW_S: a sliding-window counter (this window and the last),
        # and the times of the last few, for rates under RATE_MIN_SAMPLES per window
        self._recent: deque[float] = deque(maxlen=RATE_MIN_SAMPLES)
        self._win_start = 0.0
        self._win_n = 0
        self._win_prev = 0
        self._rej_n = 0  # 429s in this window and the last, beside the successes
        self._rej_prev = 0
        self.circuit = Circuit()

    def wait_time(self, now: float, task: Task) -> float:
        if self.inflight >= int(self.limit):
            return INF
        w = self.paused_until - now
        if self.circuit.down_since is not None:
            w = max(w, self.circuit.wait_time(now))
        if self.pace_rate is not None and self._pace_tat - now > w:
            w = self._pace_tat - now
        if self.rpm is not None:
            w = max(w, self.rpm.wait_time(now))
        if self.tpm is not None:
            w = max(w, self.tpm.wait_time(now))
        return w if w > 0.0 else 0.0

    def why(self, now: float) -> str:
        """The limit `wait_time` waits longest for (a slot, when none is free)."""
        if self.inflight >= int(self.limit):
            return WHY_SLOT
        why, w = WHY_RETRY_AFTER, self.paused_until - now
        if self.circuit.down_since is not None and self.circuit.wait_time(now) > w:
            why, w = WHY_CIRCUIT, self.circuit.wait_time(now)
        if self.pace_rate is not None and self._pace_tat - now > w:
            why, w = WHY_RPM, self._pace_tat - now
        if self.rpm is not None and self.rpm.wait_time(now) > w:
            why, w = WHY_RPM, self.rpm.wait_time(now)
        if self.tpm is not None and self.tpm.wait_time(now) > w:
            why = WHY_TPM
        return why

    def started(self, now: float, task: Task) -> None:
        self.inflight += 1
        if self.circuit.down_since is not None:
            self.circuit.started(task)
        if self.pace_rate is not None:  # (before the first cut, every 429 is news)
            self._starts[id(task)] = now
            self._pace_tat = max(self._pace_tat, now) + 1.0 / self.pace_rate
        if self.rpm is not None:
            self.rpm.charge(now, 1.0)
        if self.tpm is not None:
            self.tpm.charge(now, max(task.est_tokens, 1))

    def finished(self, now: float, task: Task, outcome: str, tokens: int) -> None:
        self.inflight -= 1
        if outcome == NOT_SENT:  # give back what `started` charged for a call never sent
            if self.rpm is not None:
                self.rpm.refund(1.0)
            if self.tpm is not None:
                self.tpm.refund(max(task.est_tokens, 1))
            if self.pace_rate is not None and self._starts.pop(id(task), None) is not None:
                self._pace_tat -= 1.0 / self.pace_rate
            return
        if self.tpm is not None and tokens > 0:
            self.tpm.refund(task.est_tokens - tokens)
        if not self.adaptive:
            return
        # a call sent before the pacer existed was sent before its first cut
        started = self._starts.pop(id(task), -INF) if self._starts else -INF
        if outcome == OK:
            if now - self._win_start >= RATE_WINDOW_S:
                self._roll(now)
            self._win_n += 1
            self._recent.append(now)
            if self.pace_rate is not None:
                if self._ceiling == INF:
                    self.pace_rate += RATE_SLOW_START
                elif self.pace_rate < self._ceiling:
                    self.pace_rate += RATE_INCREASE
                else:
                    self.pace_rate += RATE_PROBE
            elif now < self._first_ok:
                self._first_ok = now
            if self.limit < self.cap:
                self.limit = min(self.cap, self.limit + 1.0 / self.limit)
        elif outcome == RATE_LIMITED:  # acts through `pause`, with the call's start
            self._limited_start = started
            if now - self._win_start >= RATE_WINDOW_S:
                self._roll(now)
            self._rej_n += 1
        elif outcome == OVERLOADED and now - self._last_decrease >= AIMD_COOLDOWN_S:
            self.limit = max(1.0, self.limit * AIMD_DECREASE_FACTOR)
            self._last_decrease = now
            self.decreases += 1

    def admitted_rate(self, now: float) -> float | None:
        """Calls/s the provider admitted lately (our successes): over the last
        `RATE_WINDOW_S` when it holds at least `RATE_MIN_SAMPLES`, else over the span of the
        last `RATE_MIN_SAMPLES`; None when there have not been that many."""
        if now - self._win_start >= RATE_WINDOW_S:
            self._roll(now)
        share = 1.0 - (now - self._win_start) / RATE_WINDOW_S
        count = self._win_prev * share + self._win_n
        if count >= RATE_MIN_SAMPLES:
            return count / RATE_WINDOW_S
        recent = self._recent
        if len(recent) < RATE_MIN_SAMPLES:
            return None
        return (len(recent) - 1) / max(now - recent[0], RATE_WINDOW_S)

    def _roll(self, now: float) -> None:
        windows = math.floor((now - self._win_start) / RATE_WINDOW_S)
        self._win_prev = self._win_n if windows == 1 else 0
        self._win_n = 0
        self._rej_prev = self._rej_n if windows == 1 else 0
        self._rej_n = 0
        self._win_start += windows * RATE_WINDOW_S

    def rejected_share(self, now: float) -> float:
        """The share of 429s among the calls that ended over about the last window."""
        if now - self._win_start >= RATE_WINDOW_S:
            self._roll(now)
        share = 1.0 - (now - self._win_start) / RATE_WINDOW_S
        rejected = self._rej_prev * share + self._rej_n
        total = rejected + self._win_prev * share + self._win_n
        return rejected / total if total > 0 else 1.0

    def pause(self, now: float, seconds: float, *, rate_limited: bool = True) -> bool:
        """A call was told to wait `seconds` (Retry-After). Hold every call of this
        provider+model until then when that is what the provider means: an overload, a wait
        of about one call (a request budget that is spent: then learn its rate, see the
        class), or most recent calls rejected. A stray 429 amid successes (noise, as an
        overloaded provider sends) holds back its own task alone. True when paused."""
        started, self._limited_start = self._limited_start, None
        admitted = self.admitted_rate(now)
        edge = admitted is not None and seconds * admitted <= RATE_EDGE_CALLS
        if (
            rate_limited
            and not edge
            and admitted is not None
            and self.rejected_share(now) < PAUSE_SHARE
        ):
            return False
        self.paused_until = max(self.paused_until, now + seconds)
        if not rate_limited or not edge or not self.adaptive:
            return True
        if started is not None and started < self._last_cut:
            return True  # sent before the last cut: it says nothing about the pace since
        assert admitted is not None
        if self._ceiling != INF and admitted < RATE_NOISE_SHARE * self._ceiling:
            return True  # far below the rate last admitted: noise, not the limit
        pace = self.pace_rate
        slow_start = pace is not None and self._ceiling == INF
        if now - self._last_cut < RATE_COOLDOWN_S and not slow_start:
            return True  # one cut per window: the window has not caught up with the last one
        # what was admitted, or the pace a call sent since the last cut was rejected at, if
        # lower (a window that still holds a first burst counts too many)
        basis = admitted if pace is None else min(admitted, pace)
        self.pace_rate = RATE_DECREASE_FACTOR * basis
        # a window that began before our first success counts too few: slow start, until the
        # pace overshoots
        full = now - self._first_ok >= RATE_WINDOW_S
        self._ceiling = basis if full or slow_start else INF
        self._last_cut = now
        self.rate_cuts += 1
        return True

    def __repr__(self) -> str:
        pace = "" if self.pace_rate is None else f", pace={self.pace_rate:.2f}/s"
        return (
            f"ProviderMeter({self.key!r}, limit={self.limit:.1f}/{self.cap:.0f}, "
            f"inflight={self.inflight}{pace})"
        )


def _burst(rpm: float) -> float:
    # A server that allows bursts of one second of budget (or one request, whichever is more)
    # never rejects us while our burst plus one request's interval stays within that second.
    return min(DEFAULT_BURST_S, max(0.0, 1.0 - 60.0 / rpm))
