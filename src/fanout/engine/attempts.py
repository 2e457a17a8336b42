"""Attempt machinery: what a worker's slot holds, how a stream is read under an idle
timeout, when a failed attempt is retried, the one timer that enforces per-attempt
deadlines. Functions of the engine (its hot path stays in `Engine`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from fanout.engine.plan import DEFAULT_AGENT
from fanout.engine.request import body_max_tokens
from fanout.errors import InvalidOutput, TruncatedOutput
from fanout.providers.base import Completion, Provider, Request
from fanout.tasks import ErrorInfo, Task

if TYPE_CHECKING:
    from fanout.engine.engine import Engine
    from fanout.engine.run import Run

INF = float("inf")


class Slot:
    """What one worker is doing: lets deadlines, cancellation and slow-task checks reach
    the call in flight. An attempt is aborted by cancelling the worker's asyncio task with
    `abort` set, which the worker turns back into an ordinary outcome (`uncancel`)."""

    __slots__ = ("abort", "deadline", "idle", "slow_reported", "started", "task", "worker")

    def __init__(self) -> None:
        self.task: Task | None = None
        self.worker: asyncio.Task[None] | None = None
        self.started = 0.0
        self.deadline = INF  # loop time at which the attempt times out
        self.idle = False  # the deadline is a stream's idle timeout
        self.abort: str | None = None  # "timeout" or a cancellation reason
        self.slow_reported = False


TIMEOUT = "\x00timeout"  # Slot.abort value for a deadline (cannot collide with a reason)
INTERRUPT = "\x00interrupt"  # Slot.abort value for an interrupt's stop


def abort_reason(slot: Slot) -> str | None:
    # read through a call: the type checker cannot see that a cancel set it meanwhile
    return slot.abort


class Aborted(Exception):
    """An attempt cancelled on purpose (run or task cancellation)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def retry_delay(
    engine: Engine,
    t: Task,
    run: Run,
    error: BaseException,
    info: ErrorInfo,
    retry_after: float | None,
) -> float | None:
    """Seconds until the next attempt, or None when the task has failed for good."""
    max_attempts = t.attempts if t.attempts is not None else engine.retry.attempts
    if t.tries >= max_attempts or run.retries >= run.retry_budget:
        return None
    if info.error_class == "transient":
        return engine.retry.backoff(t.tries, engine.rng, retry_after)
    if info.error_class == "content" and not t.content_retried:
        t.content_retried = True
        if isinstance(error, TruncatedOutput):
            t.max_tokens = 2 * (t.max_tokens or body_max_tokens(t) or engine.max_tokens)
        elif isinstance(error, InvalidOutput):
            t.retry_hint = info.message
        return 0.0
    return None


def observe(engine: Engine, t: Task, duration: float) -> None:
    agent = t.agent or DEFAULT_AGENT
    prev = engine._observed.get(agent)
    engine._observed[agent] = duration if prev is None else prev * 0.8 + duration * 0.2


async def stream(
    engine: Engine,
    provider: Provider,
    request: Request,
    slot: Slot,
    t0: float,
    limit_s: float | None,
) -> Completion:
    """Consume a stream, failing when no chunk arrives within the idle timeout."""
    loop = engine._loop
    assert loop is not None and engine.idle_timeout is not None
    hard = INF if limit_s is None else t0 + limit_s
    idle = engine.idle_timeout
    final: Completion | None = None
    parts: list[str] = []

    def rearm() -> None:
        nxt = loop.time() + idle
        slot.idle = nxt < hard
        set_deadline(engine, slot, nxt if nxt < hard else hard)

    rearm()
    async for item in provider.stream(request):
        if isinstance(item, Completion):
            final = item
        else:
            parts.append(item.text)
            rearm()
    if final is None:
        final = Completion(text="".join(parts), model=request.model)
    return final


def set_deadline(engine: Engine, slot: Slot, when: float) -> None:
    slot.deadline = when
    if when < engine._deadline_at:
        if engine._deadline_timer is not None:
            engine._deadline_timer.cancel()
        assert engine._loop is not None
        engine._deadline_at = when
        engine._deadline_timer = engine._loop.call_at(when, on_deadline, engine)


def on_deadline(engine: Engine) -> None:
    assert engine._loop is not None
    engine._deadline_timer = None
    engine._deadline_at = INF
    now = engine._loop.time()
    soonest = INF
    for slot in engine._slots:
        d = slot.deadline
        if d <= now:
            if slot.task is not None and slot.abort is None and slot.worker is not None:
                slot.abort = TIMEOUT
                slot.worker.cancel()
            slot.deadline = INF
        elif d < soonest:
            soonest = d
    if soonest < INF:
        engine._deadline_at = soonest
        engine._deadline_timer = engine._loop.call_at(soonest, on_deadline, engine)
