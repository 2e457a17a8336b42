"""`Workers`: the fixed pool that makes the attempts, one worker per slot of the global limit.

A free worker asks the scheduler for the best task whose lane, agent and provider meters
have room, makes one attempt, and hands the outcome to the ledger; it never waits for the
store (but gives way when the store falls far behind). A failed attempt that will be
retried goes back to the scheduler with a backoff delay, so the wait is spent outside any
slot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any

from fanout.engine.backend import Backend, LocalBackend
from fanout.engine.events import Event, ProviderDown, ProviderUp, TaskSlow
from fanout.engine.ledger import Ledger
from fanout.engine.limits import (
    DOWN,
    ERROR,
    NEUTRAL,
    NOT_SENT,
    OK,
    OVERLOADED,
    RATE_LIMITED,
    ProviderMeter,
)
from fanout.engine.plan import Planner
from fanout.engine.request import (
    body_max_tokens,
    build_request,
    check_completion,
    estimate_parts,
)
from fanout.engine.retry import describe
from fanout.engine.run import Run, run_of
from fanout.engine.scheduler import Group, Scheduler
from fanout.engine.settings import EngineSettings
from fanout.engine.slots import INTERRUPT, TIMEOUT, Aborted, Slot, Slots
from fanout.errors import (
    ConnectionFailed,
    ConnectionLost,
    InvalidOutput,
    Overloaded,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    ServerError,
    TruncatedOutput,
)
from fanout.providers.base import Completion, Provider, Request
from fanout.tasks import ErrorInfo, Result, Task, TaskState

INF = float("inf")
TICK_S = 0.25  # slow-task checks and a safety wake-up for parked workers
YIELD_EVERY = 64  # a worker whose calls finish without yielding gives way this often
BACKLOG_EVERY = 8
#: calls of one task that never reached the provider and cost nothing; past this many they
#: count as attempts (a provider down for good must not keep a task forever: the circuit's
#: probes make this many last hours)
MAX_FREE_TRIES = 200
#: on a shared account, a 429 that names its wait costs no attempt while the provider
#: admitted another of our calls this recently: the budget is spent, by us or the account's
#: other processes, and the task waits its turn (`_retry_delay`); else 429s are attempts
RATE_PROGRESS_S = 10.0
#: ...for so many of a task's free calls at most: a request the account can never admit
#: (larger than its token budget) must fail after its attempts, not pause the provider 200
#: times while the others get through
MAX_FREE_429S = 30

RUNNING = TaskState.RUNNING
DONE = TaskState.DONE
FAILED = TaskState.FAILED
CANCELLED = TaskState.CANCELLED


class Workers:
    def __init__(
        self,
        *,
        loop: asyncio.AbstractEventLoop,
        settings: EngineSettings,
        planner: Planner,
        scheduler: Scheduler,
        slots: Slots,
        ledger: Ledger,
        backend: Backend | None = None,
    ) -> None:
        self._loop = loop
        self._backend: Backend = backend if backend is not None else LocalBackend()
        # the default backend's `complete` only awaits the provider's: call that directly
        # (one coroutine fewer per attempt)
        self._local = type(self._backend) is LocalBackend
        self._settings = settings
        self._planner = planner
        self._sched = scheduler
        self._slots = slots
        self._ledger = ledger
        self._providers = planner.providers
        self._default_provider = planner.default_provider
        self._rng = random.Random(settings.seed)
        self._workers: list[asyncio.Task[None]] = []
        self._ticker: asyncio.Task[None] | None = None
        self._stopping = False
        self._down_error: dict[str, str] = {}  # provider meter key -> what took it down
        #: what a worker (or the ticker) raised: a bug, never a provider's error (those
        #: are caught around the call); the pool has stopped since
        self.crashed: Exception | None = None

    def start(self) -> None:
        for i in range(self._settings.concurrency):
            slot = self._slots.add()
            slot.worker = self._loop.create_task(self._work(slot), name=f"fanout-worker-{i}")
            self._workers.append(slot.worker)
        self._ticker = self._loop.create_task(self._tick(), name="fanout-ticker")

    async def stop(self) -> None:
        self._stopping = True
        tasks = [*self._workers, *([self._ticker] if self._ticker is not None else [])]
        for w in tasks:
            w.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- the pool -------------------------------------------------------------------------

    async def _work(self, slot: Slot) -> None:
        try:
            await self._serve(slot)
        except Exception as exc:
            slot.end()  # (its attempt may have raised before it ended)
            self._crash(exc)

    def _crash(self, exc: Exception) -> None:
        """An exception escaped a worker: without this its task would end unseen, its
        attempt never finished and `wait()` would hang. Every live run fails with the
        exception (`wait()` re-raises it, traceback and all), the calls in flight are
        cancelled (they end `cancelled` as they stop) and no worker picks another task.
        The task whose attempt raised is left unfinished: a resume runs it again."""
        if self.crashed is None:
            self.crashed = exc
        self._stopping = True
        reason = f"an internal error stopped the run: {exc!r}"
        for run in self._ledger.live_runs():
            run.fail(reason, exc)
        self._slots.stop_all(reason)
        self._sched.wake_all()  # the parked workers see `_stopping` and end

    async def _serve(self, slot: Slot) -> None:
        sched = self._sched
        loop = self._loop
        ledger = self._ledger
        n = 0
        # not `while True`: an attempt aborted while the engine closes swallows its cancel
        while not self._stopping and ledger.fatal is None:
            picked = sched.pick(loop.time())
            if picked is None:
                await sched.wait()
                continue
            t = picked[0]
            await self._attempt(t, picked[1], slot)
            run = run_of(t)
            if run.interrupting:
                ledger.check_interrupted(run)
            n += 1
            # (the store's backlog is looked at every BACKLOG_EVERY attempts, not each one)
            if n % YIELD_EVERY == 0 or (n % BACKLOG_EVERY == 0 and ledger.backlogged):
                await ledger.give_way()

    async def _attempt(self, t: Task, g: Group, slot: Slot) -> None:
        loop = self._loop
        ledger = self._ledger
        settings = self._settings
        run: Run = run_of(t)
        budget = run.budget
        if budget.capped:
            prompt_tokens, output_tokens = estimate_parts(t, settings.max_tokens)
            if not budget.admit(t.n, t.model or settings.model, prompt_tokens, output_tokens):
                now = loop.time()
                for m in g.meters:
                    m.finished(now, t, NOT_SENT, 0)
                if g.limiter is not None:  # it may have been picked as the circuit's probe
                    g.limiter.circuit.finished(now, t, NOT_SENT, now)
                ledger.over_budget(t, g)
                return
        t.state = RUNNING
        t.tries += 1
        attempt = t.tries
        t0 = loop.time()
        provider_name = t.provider or self._default_provider
        provider = self._providers[provider_name]
        timeout = t.timeout if t.timeout is not None else settings.timeout
        completion: Completion | None = None
        error: BaseException | None = None
        data: Any = None
        pm = g.limiter
        assert pm is not None  # every group the planner makes has its provider's meter
        slot.begin(t, t0)
        if timeout is not None:
            self._slots.set_deadline(slot, t0 + timeout)
        ledger.attempt_started(t, attempt, t0, g.lane)  # a listener may cancel it
        try:
            if slot.abort is not None:
                raise Aborted(slot.abort)
            if pm.circuit.down_since is not None and pm.circuit.unreachable:
                raise self._unreachable(pm)
            deps = ledger.deps_of(t) if callable(t.prompt) else None
            request = build_request(t, attempt, settings.model, settings.max_tokens, deps)
            if ledger.keeps_keys:
                ledger.note_request(t, request)
            if settings.idle_timeout is not None and self._backend.streams(provider):
                completion = await self._stream(provider, request, slot, t0, timeout)
            elif self._local:
                completion = await provider.complete(request)
            else:
                completion = await self._backend.complete(provider_name, provider, request)
            data = check_completion(t, completion)
        except asyncio.CancelledError:
            reason = slot.abort_reason()
            if reason is None:  # the engine is closing
                slot.end()
                raise
            worker = slot.worker
            assert worker is not None
            worker.uncancel()
            if reason == TIMEOUT:
                slot.abort = None
                error = ProviderTimeout(
                    f"no data for {settings.idle_timeout}s"
                    if slot.idle
                    else f"no answer within {timeout}s"
                )
            else:
                error = Aborted(reason)
        except Exception as exc:
            error = exc
        slot.end()
        t1 = loop.time()
        duration = t1 - t0
        was_down = pm.circuit.down_since
        if error is None:
            assert completion is not None
            tokens = completion.input_tokens + completion.output_tokens
            for m in g.meters:
                m.finished(t1, t, OK, tokens)
            if completion.rate is not None:  # the provider's rate headers
                pm.observe(t1, completion.rate)
            if budget.capped:
                budget.settle(
                    t.n,
                    completion.model or t.model,
                    completion.input_tokens,
                    completion.output_tokens,
                    t.model,
                )
                ledger.budget_settled(run)
            c = pm.circuit
            # (a success amid successes changes nothing in the circuit: skip the call)
            if (c.down_since is not None or c.fails or not c.answered) and (
                c.finished(t1, t, OK, t0) and was_down is not None
            ):
                self._tell(ProviderUp(t1, pm.key, t1 - was_down))
            self._planner.observe(t, duration)
            result = Result(
                t,
                DONE,
                text=completion.text,
                data=data,
                finish_reason=completion.finish_reason,
                model=completion.model or t.model,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                attempts=attempt,
                latency_s=duration,
            )
            ledger.finalize(t, DONE, None, result, duration, first_token=slot.first_token)
            return
        if budget.capped:  # an answer that failed its checks was billed all the same
            if completion is not None:
                budget.settle(
                    t.n,
                    completion.model or t.model,
                    completion.input_tokens,
                    completion.output_tokens,
                    t.model,
                )
            else:
                budget.settle(t.n, None, 0, 0)
            ledger.budget_settled(run)
        retry_after = error.retry_after if isinstance(error, ProviderError) else None
        outcome = outcome_of(error, retry_after)
        for m in g.meters:
            m.finished(t1, t, outcome, 0)
        if isinstance(error, ProviderError) and error.rate is not None:
            pm.observe(t1, error.rate, retry_after if outcome == RATE_LIMITED else None)
        pm.circuit.finished(t1, t, outcome, t0)
        now_down = pm.circuit.down_since
        if now_down is not None and was_down is None:
            self._tell(ProviderDown(t1, pm.key, now_down, str(error)))
            self._down_error[pm.key] = str(error)
        elif now_down is None and was_down is not None:
            self._tell(ProviderUp(t1, pm.key, t1 - was_down))
        if isinstance(error, Aborted):
            slot.abort = None
            if error.reason == INTERRUPT:  # back to waiting, for a resume to start again
                ledger.attempt_interrupted(t, attempt, t1, g.lane, duration)
                return
            info = ErrorInfo("cancelled", "cancelled", error.reason)
            result = Result(t, CANCELLED, attempts=attempt, error=info, latency_s=duration)
            ledger.finalize(t, CANCELLED, info, result, duration)
            return
        info = describe(error)
        if retry_after and isinstance(error, RateLimited | Overloaded):
            rate_limited = isinstance(error, RateLimited)
            if pm.pause(t1, retry_after, rate_limited=rate_limited):
                ledger.limiter_paused(t, t1, pm.key, pm.limit, retry_after)
        free = t.free_tries
        delay = self._retry_delay(t, run, error, info, retry_after, pm, t1)
        if delay is None:
            attempts = t.attempts if t.attempts is not None else self._settings.retry.attempts
            budget_spent = run.retries >= run.retry_budget and t.tries - t.free_tries < attempts
            if budget_spent and info.error_class == "transient":
                # say why a retriable error was not retried: the run's budget is spent
                spent = f"retry budget spent ({run.retries}/{run.retry_budget})"
                info = dataclasses.replace(info, message=f"{info.message} [{spent}]")
            result = Result(t, FAILED, attempts=attempt, error=info, latency_s=duration)
            ledger.finalize(t, FAILED, info, result, duration, first_token=slot.first_token)
            return
        ledger.retry(
            t,
            g,
            attempt,
            t1,
            duration,
            info,
            delay,
            charged=t.free_tries == free,
            first_token=slot.first_token,
        )

    def _tell(self, event: Event) -> None:
        """A provider's news (down, up again) reaches every live run."""
        for run in self._ledger.live_runs():
            run.bus.emit(event)

    def _unreachable(self, pm: ProviderMeter) -> ConnectionFailed:
        last = self._down_error.get(pm.key) or "no answer"
        return ConnectionFailed(f"{pm.key}: the provider could not be reached: {last}")

    def _retry_delay(
        self,
        t: Task,
        run: Run,
        error: BaseException,
        info: ErrorInfo,
        retry_after: float | None,
        pm: ProviderMeter,
        now: float,
    ) -> float | None:
        """Seconds until the next attempt, or None when the task has failed for good. A call
        that never reached the provider costs no attempt and no retry budget: the provider's
        circuit decides when calls go out again (or that it cannot be reached at all). Nor,
        on an account other processes may share (`accounts.db`), does a 429 that names its
        wait while the provider admits our other calls: the budget was spent for now, by
        us or by them, the task is not at fault, and the meter's pace and pause say when
        calls go out again; a provider that admits none of our calls for
        `RATE_PROGRESS_S` costs attempts as before."""
        policy = self._settings.retry
        if t.free_tries < MAX_FREE_TRIES:
            if isinstance(error, ConnectionFailed):
                if pm.circuit.unreachable:
                    return None
                t.free_tries += 1
                return policy.backoff(1, self._rng)
            if (
                isinstance(error, RateLimited)
                and retry_after
                and t.free_tries < MAX_FREE_429S
                and pm.lease is not None
                and now - pm.last_ok <= RATE_PROGRESS_S
            ):
                t.free_tries += 1
                return policy.backoff(1, self._rng, retry_after)
        max_attempts = t.attempts if t.attempts is not None else policy.attempts
        if t.tries - t.free_tries >= max_attempts or run.retries >= run.retry_budget:
            return None
        if info.error_class == "transient":
            return policy.backoff(t.tries, self._rng, retry_after)
        if info.error_class == "content" and not t.content_retried:
            t.content_retried = True
            if isinstance(error, TruncatedOutput):
                t.max_tokens = 2 * (t.max_tokens or body_max_tokens(t) or self._settings.max_tokens)
            elif isinstance(error, InvalidOutput):
                t.retry_hint = info.message
            return 0.0
        return None

    async def _stream(
        self,
        provider: Provider,
        request: Request,
        slot: Slot,
        t0: float,
        limit_s: float | None,
    ) -> Completion:
        """Consume a stream, failing when no chunk arrives within the idle timeout."""
        loop = self._loop
        idle = self._settings.idle_timeout
        assert idle is not None
        hard = INF if limit_s is None else t0 + limit_s
        final: Completion | None = None
        parts: list[str] = []

        def rearm() -> None:
            nxt = loop.time() + idle
            slot.idle = nxt < hard
            self._slots.set_deadline(slot, nxt if nxt < hard else hard)

        rearm()
        async for item in provider.stream(request):
            if isinstance(item, Completion):
                final = item
            else:
                if slot.first_token is None:
                    slot.first_token = loop.time()
                parts.append(item.text)
                rearm()
        if final is None:
            final = Completion(text="".join(parts), model=request.model)
        return final

    async def _tick(self) -> None:
        try:
            await self._ticks()
        except Exception as exc:
            self._crash(exc)

    async def _ticks(self) -> None:
        slow_after = self._settings.slow_after_s
        while True:
            await asyncio.sleep(TICK_S)
            now = self._loop.time()
            if slow_after is not None:
                for slot in self._slots.newly_slow(now, slow_after):
                    t = slot.task
                    assert t is not None
                    run_of(t).emit(TaskSlow(now, t, now - slot.started))
            if self._sched.ready:
                self._sched.wake_all()
            self._ledger.sample(now)


def outcome_of(error: BaseException, retry_after: float | None) -> str:
    """What a failed attempt tells the provider's meter."""
    if isinstance(error, RateLimited):
        return RATE_LIMITED if retry_after else OVERLOADED
    if isinstance(error, Overloaded):
        return OVERLOADED
    if isinstance(error, ConnectionFailed | ConnectionLost | ServerError | ProviderTimeout):
        return DOWN
    if isinstance(error, Aborted):
        return NEUTRAL
    return ERROR
