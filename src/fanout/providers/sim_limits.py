"""The shapes of a simulated provider's rate limits (issue 9, issue 10).

Real services enforce their budgets in different ways, and a client that paces itself well
against one can waste another: so the simulator offers the common ones, for requests and
tokens alike, chosen by `SimConfig.limit_shape`:

- `gcra`: the generic cell rate algorithm with a burst of one second of budget (the default,
  what the simulator always did);
- `fixed`: a fixed window (`window_s`, a minute by default): the whole window's budget may
  go at once, then nothing until the next window starts;
- `bucket`: a token bucket holding a whole window's budget (a large burst), refilled
  continuously at the rate;
- `sliding`: a sliding log: at most a window's budget over any `window_s`.

Each answers `wait(now, cost)` (seconds until `cost` units are admitted; 0 = now), records
an admission with `commit(now, cost)` and reports `state(now)`: units admitted right now
without waiting, and seconds until the budget is whole again (what the rate headers say).
A cost larger than the whole budget is admitted once the budget is whole, so it cannot
starve.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Protocol

SHAPES: tuple[str, ...] = ("gcra", "fixed", "bucket", "sliding")
DEFAULT_SHAPE = "gcra"
DEFAULT_WINDOW_S = 60.0
_EPS = 1e-9


class Budget(Protocol):
    per_minute: float

    def wait(self, now: float, cost: float) -> float: ...

    def commit(self, now: float, cost: float) -> None: ...

    def state(self, now: float) -> tuple[int, float]: ...


class Gcra:
    """Bursts of one second of budget (or one unit, whichever is more)."""

    __slots__ = ("interval", "per_minute", "tat", "window")

    def __init__(self, per_minute: float) -> None:
        self.per_minute = per_minute
        self.interval = 60.0 / per_minute
        self.window = max(1.0, self.interval)  # one second's worth, at least one unit
        self.tat = -math.inf  # theoretical arrival time

    def wait(self, now: float, cost: float) -> float:
        inc = cost * self.interval
        over = max(self.tat, now) + inc - now - max(self.window, inc)
        return over if over > _EPS else 0.0

    def commit(self, now: float, cost: float) -> None:
        self.tat = max(self.tat, now) + cost * self.interval

    def state(self, now: float) -> tuple[int, float]:
        used = max(self.tat - now, 0.0)
        return int(max(self.window - used, 0.0) / self.interval + _EPS), used


class FixedWindow:
    """A window's budget per window; the first window starts with the first call, the next
    ones follow it back to back."""

    __slots__ = ("cap", "per_minute", "start", "used", "window_s")

    def __init__(self, per_minute: float, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.cap = per_minute * window_s / 60.0
        self.start = -math.inf
        self.used = 0.0

    def _roll(self, now: float) -> None:
        if now >= self.start + self.window_s:
            if self.start == -math.inf:
                self.start = now
            else:
                self.start += math.floor((now - self.start) / self.window_s) * self.window_s
            self.used = 0.0

    def wait(self, now: float, cost: float) -> float:
        self._roll(now)
        if self.used + cost <= self.cap + _EPS or self.used == 0.0:
            return 0.0
        return max(self.start + self.window_s - now, _EPS * 10)

    def commit(self, now: float, cost: float) -> None:
        self._roll(now)
        self.used += cost

    def state(self, now: float) -> tuple[int, float]:
        self._roll(now)
        reset = self.start + self.window_s - now if self.used > 0.0 else 0.0
        return int(max(self.cap - self.used, 0.0) + _EPS), reset


class TokenBucket:
    """A bucket of a whole window's budget, refilled at the rate (starts full)."""

    __slots__ = ("cap", "level", "per_minute", "rate_s", "stamp")

    def __init__(self, per_minute: float, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.per_minute = per_minute
        self.rate_s = per_minute / 60.0
        self.cap = max(1.0, per_minute * window_s / 60.0)
        self.level = self.cap
        self.stamp = -math.inf

    def _fill(self, now: float) -> None:
        if now > self.stamp:
            if self.stamp > -math.inf:
                self.level = min(self.cap, self.level + (now - self.stamp) * self.rate_s)
            self.stamp = now

    def wait(self, now: float, cost: float) -> float:
        self._fill(now)
        need = min(cost, self.cap) - self.level
        return need / self.rate_s if need > _EPS else 0.0

    def commit(self, now: float, cost: float) -> None:
        self._fill(now)
        self.level -= cost  # may go below 0 for a cost above the whole bucket

    def state(self, now: float) -> tuple[int, float]:
        self._fill(now)
        return int(max(self.level, 0.0) + _EPS), (self.cap - self.level) / self.rate_s


class SlidingWindow:
    """At most a window's budget over any `window_s` (a log of admissions)."""

    __slots__ = ("cap", "log", "per_minute", "used", "window_s")

    def __init__(self, per_minute: float, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.per_minute = per_minute
        self.window_s = window_s
        self.cap = per_minute * window_s / 60.0
        self.log: deque[tuple[float, float]] = deque()  # (time, cost), oldest first
        self.used = 0.0

    def _expire(self, now: float) -> None:
        log = self.log
        while log and log[0][0] + self.window_s <= now:
            self.used -= log.popleft()[1]
        if not log:
            self.used = 0.0  # no drift from float sums

    def wait(self, now: float, cost: float) -> float:
        self._expire(now)
        over = self.used + min(cost, self.cap) - self.cap
        if over <= _EPS:
            return 0.0
        for at, units in self.log:  # the oldest admissions free the room first
            over -= units
            if over <= _EPS:
                return at + self.window_s - now
        return self.window_s  # not reached: the log holds `used`

    def commit(self, now: float, cost: float) -> None:
        self._expire(now)
        self.log.append((now, cost))
        self.used += cost

    def state(self, now: float) -> tuple[int, float]:
        self._expire(now)
        reset = self.log[-1][0] + self.window_s - now if self.log else 0.0
        return int(max(self.cap - self.used, 0.0) + _EPS), reset


def make_budget(shape: str, per_minute: float, window_s: float = DEFAULT_WINDOW_S) -> Budget:
    """The budget of `shape` (one of `SHAPES`) over `per_minute` units."""
    if shape == "gcra":
        return Gcra(per_minute)
    if shape == "fixed":
        return FixedWindow(per_minute, window_s)
    if shape == "bucket":
        return TokenBucket(per_minute, window_s)
    if shape == "sliding":
        return SlidingWindow(per_minute, window_s)
    raise ValueError(f"limit shape {shape!r}: use one of {', '.join(SHAPES)}")
