"""The live display: a provider down and up again; running never above the concurrency;
the waiting by cause; per lane counts of its own tasks; cancelled and not-selected tasks
named as such; a Retry-After pause counting down; an ETA from recent completions."""

from __future__ import annotations

import asyncio
import io
import re

from rich.console import Console

from fanout import CallableProvider, Engine, LimiterChanged, Request, RetryPolicy, Task
from fanout.cli.progress import EtaWindow, LiveProgress
from fanout.engine.events import ProviderDown, ProviderUp
from fanout.errors import ConnectionFailed, RateLimited
from tests.engine.support import GatedStore, Recorder, arun, until


def test_the_display_names_a_provider_that_is_down_and_drops_it_once_it_answers() -> None:
    state = {"down": True, "answered": 0}

    async def call(req: Request) -> str:
        if state["down"] and state["answered"] >= 4:
            raise ConnectionFailed("p: cannot connect to 127.0.0.1:9: is the server running?")
        state["answered"] += 1
        return "ok"

    async def main() -> None:
        async with Engine(providers=CallableProvider(call, name="p"), concurrency=4) as e:
            run = e.submit([Task(f"q{i}") for i in range(40)])
            out = io.StringIO()
            view = LiveProgress(run, Console(file=out, width=160, force_terminal=False))
            rec = Recorder()
            run.listen(rec)
            await until(lambda: bool(rec.of(ProviderDown)))
            Console(file=out, width=160).print(view.render())
            shown = out.getvalue()
            assert "provider p:sim-1 down for" in shown
            assert "is the server running?" in shown
            state["down"] = False
            await until(lambda: bool(rec.of(ProviderUp)))
            out.truncate(0)
            Console(file=out, width=160).print(view.render())
            assert "down for" not in out.getvalue()
            assert "answers again" in out.getvalue()
            await run.wait()
            assert run.metrics()["done"] == 40

    arun(main)


def _shown(view: LiveProgress) -> str:
    out = io.StringIO()
    Console(file=out, width=200, force_terminal=False).print(view.render())
    return out.getvalue()


def test_running_never_passes_the_concurrency_while_the_store_lags() -> None:
    """The display once showed `running 512` at concurrency 8: it counted a task running
    from its start to its durable result, and results wait for the store. A store that
    takes its time must show them as saving, with at most 4 running."""
    store = GatedStore()
    calls = {"n": 0}

    async def call(req: Request) -> str:
        calls["n"] += 1
        await asyncio.sleep(0)
        return "ok"

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(call, name="p"), concurrency=4, store=store
        ) as e:
            store.gate.clear()  # nothing becomes durable from now on
            run = e.submit([Task(f"q{i}") for i in range(40)])
            view = LiveProgress(run, Console(file=io.StringIO()))
            try:
                # every call made and its result recorded (none durable)
                await until(lambda: all(r is not None for r in run.results_by_n), within=60)
                assert calls["n"] == 40
                shown = _shown(view)
                # the event counts say 40 running: the display must not
                assert run.stats.running > 4
                assert "running 0 (of 4)" in shown, shown
                assert "saving 40" in shown, shown
            finally:
                store.gate.set()  # (else the engine's exit waits for the store forever)
            await run.wait()
            assert "done 40" in _shown(view)

    arun(main)


def test_the_waiting_is_broken_down_by_cause_and_lanes_count_their_own_tasks() -> None:
    gate = asyncio.Event()

    async def call(req: Request) -> str:
        await gate.wait()
        return "ok"

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(call, name="p"), concurrency=4, lanes={"slow": 1}
        ) as e:
            first = [Task(f"a{i}", key=f"a{i}", lane="slow") for i in range(5)]
            then = [Task(f"b{i}", key=f"b{i}", depends_on=[f"a{i}"]) for i in range(5)]
            run = e.submit(first + then)
            view = LiveProgress(run, Console(file=io.StringIO()))
            await until(lambda: run.stats.running == 1)
            shown = _shown(view)
            assert "waiting 9: 5 on dependencies · 4 for a lane slot" in shown
            assert "1 running · 4 waiting · 0 done" in shown  # lane slow
            assert "0 running · 5 waiting · 0 done" in shown  # lane default
            gate.set()
            await run.wait()

    arun(main)


def test_after_a_cancel_the_display_says_cancelled_not_done() -> None:
    gate = asyncio.Event()

    async def call(req: Request) -> str:
        await gate.wait()
        return "ok"

    async def main() -> None:
        async with Engine(providers=CallableProvider(call, name="p"), concurrency=2) as e:
            run = e.submit([Task(f"q{i}") for i in range(20)])
            view = LiveProgress(run, Console(file=io.StringIO()))
            await until(lambda: run.stats.running == 2)
            run.cancel("enough")
            await run.wait()
            shown = _shown(view)
            assert "cancelled 20" in shown
            assert "100%" not in shown
            assert "0%" in shown
            assert "not done" not in shown

    arun(main)


def test_tasks_not_selected_are_not_counted_as_not_done() -> None:
    async def call(req: Request) -> str:
        return "ok"

    async def main() -> None:
        async with Engine(providers=CallableProvider(call, name="p"), concurrency=2) as e:
            root = Task("root", key="root")
            picked = [
                Task(f"q{i}", key=f"q{i}", depends_on=["root"], when=lambda _d, i=i: i < 2)
                for i in range(6)
            ]
            run = e.submit([root, *picked])
            view = LiveProgress(run, Console(file=io.StringIO()))
            await run.wait()
            shown = _shown(view)
            assert "done 3" in shown
            assert "not selected 4" in shown
            assert "100%" in shown  # all that was chosen is done
            assert "skipped" not in shown

    arun(main)


def test_a_retry_after_pause_counts_down() -> None:
    state = {"n": 0}

    async def call(req: Request) -> str:
        state["n"] += 1
        if state["n"] == 1:
            raise RateLimited("slow down", status=429, retry_after=30.0)
        return "ok"

    async def main() -> None:
        async with Engine(
            providers=CallableProvider(call, name="p"),
            concurrency=2,
            retry=RetryPolicy(attempts=3, backoff_base_s=0.01),
        ) as e:
            run = e.submit([Task(f"q{i}") for i in range(4)])
            rec = Recorder()
            run.listen(rec)
            view = LiveProgress(run, Console(file=io.StringIO()))
            await until(lambda: bool(rec.of(LimiterChanged)))
            shown = _shown(view)
            assert re.search(r"Retry-After pause: (29|30)\.\d s left", shown), shown
            assert "paused (Retry-After)" in shown
            e.cancel_run(run, "done looking")
            await run.wait()

    arun(main)


def test_the_eta_comes_from_the_recent_completions() -> None:
    eta = EtaWindow()
    # slow at first (1 task/s for 100 s), then 10 tasks/s for the last 30 s
    for t in range(0, 101, 5):
        eta.update(float(t), t, 1000)
    left = None
    for t in range(101, 131):
        left = eta.update(float(t), 100 + (t - 100) * 10, 1000)
    assert left is not None
    assert 90 <= left <= 110  # 1000 left at about 10/s, not at the run's average
