"""`Sampler`: the `samples` rows, a picture of each live run about once a second.

Each row holds the attempts in flight, the concurrency allowed now (the worker pool, or
less while adaptive limits hold the providers back), and the calls and tokens per minute
used since the previous row. The counts come from the run's metrics and the slots, so
sampling costs the hot path nothing.
"""

from __future__ import annotations

from fanout.engine.plan import Planner
from fanout.engine.run import Run
from fanout.engine.slots import Slots
from fanout.store.base import Sampled

SAMPLE_EVERY_S = 1.0


class Sampler:
    def __init__(self, planner: Planner, slots: Slots, concurrency: int, clock: float) -> None:
        self._planner = planner
        self._slots = slots
        self._concurrency = concurrency
        self._clock = clock  # unix - loop time
        self._last: dict[str, tuple[float, int, int]] = {}  # run -> (t, attempts, tokens)
        self._next = 0.0

    def due(self, now: float) -> bool:
        return now >= self._next

    def limit_now(self) -> int:
        meters = self._planner.provider_meters.values()
        allowed = sum(int(pm.limit) for pm in meters) if meters else self._concurrency
        return min(self._concurrency, allowed)

    def sample(self, run: Run, now: float) -> Sampled:
        self._next = now + SAMPLE_EVERY_S
        m = run.metrics_
        tokens = m.input_tokens + m.output_tokens
        t_prev, attempts_prev, tokens_prev = self._last.get(run.id, (m.started_at or now, 0, 0))
        self._last[run.id] = (now, m.attempts, tokens)
        per_min = 60.0 / max(now - t_prev, 1e-3)
        in_flight = sum(1 for s in self._slots if s.task is not None and s.task.run is run)
        return Sampled(
            run.id,
            now + self._clock,
            in_flight,
            self.limit_now(),
            round((m.attempts - attempts_prev) * per_min, 3),
            round((tokens - tokens_prev) * per_min, 3),
        )

    def forget(self, run: Run) -> None:
        self._last.pop(run.id, None)
