"""Whether a provider is down (issue 10): the circuit every `ProviderMeter` holds, and the
outcomes a finished call reports to the meters."""

from __future__ import annotations

import math
import random

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
