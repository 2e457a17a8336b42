"""Where each task's time goes: its spans, from submitted to its final state.

A task has one span open at a time (`Task.span_kind`, since `Task.span_t0`, loop time);
every transition closes it and opens the next at the same instant, so a task's spans never
overlap and together cover its whole life. Closed spans wait on the task (`Task.spans`)
until the ledger writes its next op for the task (an attempt's start or end, its result)
and ride with it to the store: recording them costs no op of its own. A span is a tuple
of plain values and a task's closed spans a tuple of them, not a list: the garbage
collector stops tracking such tuples the first time it meets them, so spans waiting in the
journal are not walked again by each collection (lists were, at a cost per task that
showed in the engine's overhead).

Kinds (the `spans` table's `kind`): `deps` (waiting on dependencies), `queued` (ready,
waiting for any worker), `lane` (waiting for a lane, agent or provider slot), `rpm`, `tpm`,
`retry_after`, `circuit` (the provider is down), `budget` (parked by the cost cap),
`backoff` (between attempts), `run` (one attempt).

Why a ready task waits is known for its group, not for each task: the scheduler looks only
at a group's head, and a task far back in a lane's queue waits for the same reason as its
head. So each group keeps a `WaitClock` (how long it has been held back, per cause), the
task notes the clock's reading when it joins the queue, and the difference when it leaves
splits its wait: time per cause, the rest `queued`. The split spans are laid one after the
other in the order of `KINDS` (the time per cause is exact, not where it fell inside the
wait).
"""

from __future__ import annotations

import math

from fanout.store.base import Span, SpanBatch
from fanout.tasks import ErrorInfo, Task, TaskState

INF = math.inf

DEPS = "deps"
QUEUED = "queued"
LANE = "lane"
RPM = "rpm"
TPM = "tpm"
RETRY_AFTER = "retry_after"
CIRCUIT = "circuit"
BUDGET = "budget"
BACKOFF = "backoff"
RUN = "run"
#: every kind, in the order a split wait lays them out
KINDS = (DEPS, LANE, RPM, TPM, RETRY_AFTER, CIRCUIT, BUDGET, QUEUED, BACKOFF, RUN)


class WaitClock:
    """How long a group of ready tasks was held back, per cause (loop seconds).

    The scheduler says `block(now, why, wait)` when it finds the group's head held back
    (for `wait` seconds, `inf` until something finishes) and `open(now)` when the head
    could start. A time-bound wait stops counting when it is due even if nobody looked
    again: by then the group waits for a worker, not for its budget."""

    __slots__ = ("acc", "since", "until", "why")

    def __init__(self) -> None:
        self.why: str | None = None
        self.since = 0.0
        self.until = INF
        self.acc: dict[str, float] = {}

    def block(self, now: float, why: str, wait: float) -> None:
        if why == self.why and now <= self.until:
            self.until = now + wait
            return
        self._settle(now)
        self.why = why
        self.since = now
        self.until = now + wait

    def open(self, now: float) -> None:
        self._settle(now)
        self.why = None

    def held(self, now: float) -> str | None:
        """The cause holding the group back now, if any."""
        return self.why if self.why is not None and now < self.until else None

    def _settle(self, now: float) -> None:
        why = self.why
        if why is not None:
            end = now if now < self.until else self.until
            if end > self.since:
                self.acc[why] = self.acc.get(why, 0.0) + end - self.since

    def reading(self, now: float) -> dict[str, float] | None:
        """Seconds held back per cause so far; None while it never was (the common case)."""
        why = self.why
        if why is None and not self.acc:
            return None
        out = dict(self.acc)
        if why is not None:
            end = now if now < self.until else self.until
            if end > self.since:
                out[why] = out.get(why, 0.0) + end - self.since
        return out


def close(
    t: Task,
    now: float,
    nxt: str,
    attempt: int | None = None,
    detail: str | None = None,
    first_token: float | None = None,
) -> None:
    """Close the open span at `now` and open `nxt` (an empty span is dropped, but for an
    attempt's: every attempt has its `run` span); a span of kind `nxt` just goes on."""
    kind = t.span_kind
    if kind == nxt:
        return
    if kind and (now > t.span_t0 or kind == RUN):
        span = (kind, t.span_t0, now, attempt, detail, first_token)
        spans = t.spans
        t.spans = (span,) if spans is None else (*spans, span)
    t.span_kind = nxt
    t.span_t0 = now


def leave_queue(t: Task, now: float, nxt: str) -> None:
    """`t` leaves the ready queue at `now` (it starts, is parked or ends): split its wait
    by its group's wait clock, then open `nxt`."""
    base = t.span_base
    clock: WaitClock = getattr(t.group, "clock", None) or _NO_WAIT
    if base is None and clock.why is None and not clock.acc:
        # never held back (most groups never are): one `queued` span, as `close` makes it
        if now > t.span_t0:
            span = (t.span_kind, t.span_t0, now, None, None, None)
            spans = t.spans
            t.spans = (span,) if spans is None else (*spans, span)
        t.span_kind = nxt
        t.span_t0 = now
        return
    t.span_base = None
    reading = clock.reading(now)
    if reading is not None:
        cursor = t.span_t0
        split: list[Span] = []
        for kind in KINDS:
            d = reading.get(kind)
            if d is None:
                continue
            if base is not None:
                d -= base.get(kind, 0.0)
            if d <= 0.0:
                continue
            end = cursor + d
            if end > now:  # (floating point: never past the end of the wait)
                end = now
            split.append((kind, cursor, end, None, None, None))
            cursor = end
        if split:
            t.spans = (*(t.spans or ()), *split)
        t.span_t0 = cursor
    close(t, now, nxt)


_NO_WAIT = WaitClock()  # the clock of a task without a group (never held back)


def take(t: Task, clock: float) -> SpanBatch | None:
    """The task's closed spans, for the store (they leave the task): `clock` turns their
    loop times into unix times, and they are numbered from the task's count so far."""
    spans = t.spans
    if spans is None:
        return None
    t.spans = None
    seq = t.span_seq
    t.span_seq = seq + len(spans)
    return (clock, seq, spans)


def drop(t: Task) -> SpanBatch | None:
    """`take` for a store that keeps no spans: they go at once (nothing to hand over)."""
    t.spans = None
    return None


def end(
    t: Task,
    now: float,
    state: TaskState,
    error: ErrorInfo | None,
    duration: float = -1.0,
    first_token: float | None = None,
) -> None:
    """`t` reached its final `state` at `now`; `duration` is that of the attempt that ended
    it (its `run` span then ends exactly `duration` after it began), -1 when none did."""
    kind = t.span_kind
    if kind == RUN:  # (`close`, inline: nearly every task ends so)
        t0 = t.span_t0
        if duration >= 0.0:
            now = t0 + duration
        detail = "done" if state is TaskState.DONE else error.kind if error else str(state)
        span = (RUN, t0, now, t.tries, detail, first_token)
        spans = t.spans
        t.spans = (span,) if spans is None else (*spans, span)
        t.span_kind = ""
    elif kind == QUEUED:
        leave_queue(t, now, "")
    else:
        close(t, now, "")
    t.span_t0 = 0.0  # (a finished task keeps no float of its own: 24 B a task)
