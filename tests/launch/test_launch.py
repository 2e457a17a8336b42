"""The launch layer as a second front end (a service) would use it: start a run and hold
its handle without blocking, finish it, interrupt it, resume it with the stored options."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from fanout import launch
from fanout.engine.events import Event, TaskFinished
from fanout.engine.run import Run
from fanout.errors import ConfigError
from fanout.launch import (
    EngineChoice,
    Overrides,
    Reopened,
    RunOptions,
    Setup,
    Sink,
    parse_duration,
)
from fanout.tasks import Task


class CountingSink:
    """Counts finished tasks from the events; `finish` gives the durable results' count."""

    def __init__(self) -> None:
        self.finished = 0
        self.aborted = False

    def attach(self, run: Run) -> None:
        def on_event(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                self.finished += 1

        run.listen(on_event)

    async def finish(self, run: Run) -> int:
        return len(await run.results())

    def abort(self) -> None:
        self.aborted = True


def _sink() -> Sink[int]:
    return CountingSink()


def _tasks(n: int) -> list[Task]:
    return [Task(f"prompt {i}", key=f"t{i}") for i in range(n)]


def test_start_returns_the_run_at_once_and_finish_sees_it_through(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    options = RunOptions(choice=EngineChoice(sim_latency="20ms", concurrency=2), cache=False)

    async def main() -> None:
        sink = CountingSink()
        launched = await launch.start(
            _tasks(6), sink, kind="test", config={"app": 1}, options=options, store_path=store
        )
        assert isinstance(launched.run, Run)
        assert not launched.run.done  # a server gets the handle while the run runs
        assert launched.run.total == 6
        seen = []

        async def watch(run: Run) -> None:
            seen.append(run.id)

        done = await launched.finish(watch)
        assert done.output == 6
        assert sink.finished == 6
        assert not sink.aborted
        assert done.metrics["done"] == 6
        assert not done.interrupted
        assert seen == [launched.run_id]
        assert launch.run_kind(launched.run_id, store) == "test"
        assert launch.find_run(launched.run_id[:8], store) == launched.run_id

    asyncio.run(main())


def test_interrupt_then_resume_goes_on_with_the_stored_options(tmp_path: Path) -> None:
    store = tmp_path / "runs.sqlite"
    options = RunOptions(
        choice=EngineChoice(sim_latency="200ms", concurrency=1, seed=3),
        cache=False,
        cache_ttl_s=60,
        deadline_s=300,
        grace_s=0.5,
    )
    given: list[Mapping[str, Any]] = []

    def reopen(config: Mapping[str, Any], setup: Setup) -> Reopened[int]:
        given.append(config)
        return Reopened(None, lambda run: _sink())

    async def main() -> None:
        first = await launch.start(
            _tasks(4), _sink(), kind="test", config={"app": 1}, options=options, store_path=store
        )
        await asyncio.sleep(0.05)
        first.interrupt(now=True)
        done = await first.finish()
        assert done.interrupted
        assert done.metrics["done"] < 4
        again = await launch.resume(
            first.run_id,
            reopen,
            kind="test",
            overrides=Overrides(choice=EngineChoice(concurrency=4)),
            store_path=store,
        )
        assert again.options == RunOptions(
            choice=EngineChoice(sim_latency="200ms", concurrency=4, seed=3),
            cache=False,
            cache_ttl_s=60,
            deadline_s=300,
            grace_s=0.5,
        )
        rest = await again.finish()
        assert rest.metrics["done"] == 4
        assert rest.output == 4
        assert given[0]["app"] == 1
        with pytest.raises(ConfigError, match="is a 'test' run, not a batch run"):
            await launch.resume(first.run_id, reopen, kind="batch", store_path=store)

    asyncio.run(main())


def test_a_bad_start_aborts_the_sink_and_runs_nothing(tmp_path: Path) -> None:
    sink = CountingSink()
    options = RunOptions(choice=EngineChoice(provider="nosuch"))

    async def main() -> None:
        with pytest.raises(ConfigError, match="nosuch"):
            await launch.start(
                _tasks(1), sink, kind="test", config={}, options=options, store_path=tmp_path / "s"
            )

    asyncio.run(main())
    assert sink.aborted


def test_options_round_trip_through_the_stored_config() -> None:
    options = RunOptions(
        choice=EngineChoice(config=Path("fanout.yaml"), concurrency=5, rpm=60.0),
        cache=False,
        cache_ttl_s=7200,
        deadline_s=30,
        grace_s=2,
    )
    back = RunOptions.from_config(options.to_config())
    assert back.choice.config == Path("fanout.yaml").resolve()
    assert back.choice.concurrency == 5
    assert (back.cache, back.cache_ttl_s, back.deadline_s, back.grace_s) == (False, 7200, 30, 2)
    # a run stored before the options were kept: the defaults
    old = RunOptions.from_config({"choice": {"concurrency": 2, "seed": 0}})
    assert (old.choice.concurrency, old.cache, old.grace_s) == (2, True, 10.0)
    changed = back.updated(Overrides(cache=True, choice=EngineChoice(rpm=30.0)))
    assert (changed.cache, changed.choice.rpm, changed.choice.concurrency) == (True, 30.0, 5)


@pytest.mark.parametrize(
    ("value", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("12h", 43200.0)]
)
def test_parse_duration(value: str, seconds: float) -> None:
    assert parse_duration("--cache-ttl", value) == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-1h"])
def test_parse_duration_refuses_with_the_flag_named(value: str) -> None:
    with pytest.raises(ConfigError, match="--cache-ttl"):
        parse_duration("--cache-ttl", value)


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--deadline"):
        RunOptions(deadline_s=0)
    with pytest.raises(ConfigError, match="--grace"):
        RunOptions(grace_s=-1)


def test_caps_are_kept_with_the_run_and_a_resume_may_raise_them() -> None:
    capped = RunOptions(max_cost_usd=2.5, max_tokens=90_000)
    back = RunOptions.from_config(capped.to_config())
    assert (back.max_cost_usd, back.max_tokens) == (2.5, 90_000)
    raised = back.updated(Overrides(max_cost_usd=10.0))
    assert (raised.max_cost_usd, raised.max_tokens) == (10.0, 90_000)
    assert "max_cost_usd" not in RunOptions().to_config()["options"]  # uncapped: not stored
    with pytest.raises(ConfigError, match="--max-cost"):
        RunOptions(max_cost_usd=0)


def test_the_run_is_in_the_store_when_start_returns(tmp_path: Path) -> None:
    """A front end shows the run's id once `start` returns; a user may Ctrl-C (or the process
    die) at that instant, so another process must already find the run to resume it."""
    store = tmp_path / "运行.sqlite"
    options = RunOptions(choice=EngineChoice(sim_latency="5s", concurrency=1), cache=False)

    async def main() -> None:
        launched = await launch.start(
            _tasks(3), _sink(), kind="batch", config={}, options=options, store_path=store
        )
        # no await between: the run has had no chance to write anything after `start`
        assert launch.run_kind(launched.run_id, store) == "batch"
        launched.interrupt(now=True)
        await launched.finish()

    asyncio.run(main())
