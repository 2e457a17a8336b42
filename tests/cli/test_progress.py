"""The live display says when a provider is down, and when it answers again."""

from __future__ import annotations

import io

from rich.console import Console

from fanout import CallableProvider, Engine, Request, Task
from fanout.cli.progress import LiveProgress
from fanout.engine.events import ProviderDown, ProviderUp
from fanout.errors import ConnectionFailed
from tests.engine.support import Recorder, arun, until


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
