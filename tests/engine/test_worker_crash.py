"""An exception that escapes a worker (a bug: a provider's own errors are caught and
classified around the call) ends the run with that exception instead of hanging it: `wait()`
re-raises it with its traceback, the calls in flight are cancelled, the engine closes, and
it starts no new run."""

from __future__ import annotations

import asyncio
import traceback
from pathlib import Path

import pytest

from fanout import (
    CallableProvider,
    Completion,
    Engine,
    FanoutError,
    Request,
    SqliteStore,
    Task,
    TaskState,
)
from fanout.engine.plan import Planner

from .support import arun, until

#: generous: the run must end at once, but the machine may be loaded
NO_HANG_S = 60


class Hanging:
    """A provider whose every call but the one asked for waits forever (until cancelled):
    those are the calls in flight when a worker raises."""

    def __init__(self, bad_prompt: str, bad: Completion | None = None) -> None:
        self.bad_prompt = bad_prompt
        self.bad = bad
        self.waiting = 0
        self.cancelled = 0
        self.all_waiting = asyncio.Event()
        self.in_flight_goal = 0

    async def __call__(self, req: Request) -> str | Completion:
        prompt = req.messages[-1]["content"]
        if prompt == self.bad_prompt:
            await self.all_waiting.wait()  # the others are in flight first
            return self.bad if self.bad is not None else "答"
        self.waiting += 1
        if self.waiting >= self.in_flight_goal:
            self.all_waiting.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        raise AssertionError("never answered")


def crash_and_check(provider: Hanging, store_path: Path | None = None) -> tuple[BaseException, str]:
    """Run 3 hanging tasks and the bad one on 4 workers; return what `wait()` raised and
    the run's id."""
    provider.in_flight_goal = 3
    raised: list[BaseException] = []
    ran: list[str] = []

    async def main() -> None:
        store = SqliteStore(store_path) if store_path is not None else None
        kwargs = {"store": store} if store is not None else {}
        async with Engine(providers=CallableProvider(provider), concurrency=4, **kwargs) as eng:
            run = eng.submit([Task(f"等{i}") for i in range(3)] + [Task("坏的")])
            with pytest.raises(Exception) as caught:  # noqa: PT011 (any: it is the bug's own)
                await asyncio.wait_for(run.wait(), NO_HANG_S)
            raised.append(caught.value)
            ran.append(run.id)
            assert run.status == "failed"
            in_flight = [t for t in run.tasks if t is not None and t.prompt != "坏的"]
            await until(lambda: all(t.state.terminal for t in in_flight), NO_HANG_S)
            assert {t.state for t in in_flight} == {TaskState.CANCELLED}
            with pytest.raises(FanoutError, match="internal error"):
                eng.submit([Task("再来")])

    arun(lambda: asyncio.wait_for(main(), 2 * NO_HANG_S))  # closing must not hang either
    assert provider.cancelled == 3  # the calls in flight were cancelled
    return raised[0], ran[0]


def test_a_provider_answer_that_breaks_the_engine_fails_the_run_with_its_error() -> None:
    # tokens that are not numbers: the engine's own arithmetic on the answer raises
    bad = Completion("答", input_tokens=None)  # type: ignore[arg-type]
    error, _ = crash_and_check(Hanging("坏的", bad))
    assert isinstance(error, TypeError)
    frames = [f.name for f in traceback.extract_tb(error.__traceback__)]
    assert "_attempt" in frames  # the traceback reaches where it was raised


def test_an_internal_method_that_raises_fails_the_run_with_its_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    observe = Planner.observe

    def broken(self: Planner, t: Task, duration: float) -> None:
        if t.prompt == "坏的":
            raise RuntimeError("内部错误")
        observe(self, t, duration)

    monkeypatch.setattr(Planner, "observe", broken)
    error, _ = crash_and_check(Hanging("坏的"), tmp_path / "运行.db")  # the SQLite store too
    assert isinstance(error, RuntimeError)
    assert str(error) == "内部错误"
    frames = [f.name for f in traceback.extract_tb(error.__traceback__)]
    assert "broken" in frames
