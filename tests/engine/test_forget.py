"""A long-lived engine (the service's) lets finished runs go: `forget` drops a finished
run from its memory and leaves a running one alone."""

from __future__ import annotations

import pytest

from fanout import Engine, FanoutError, Task

from .support import Gated, arun


def test_forget_drops_a_finished_run_and_keeps_a_running_one() -> None:
    gated = Gated(["held"])

    async def main() -> None:
        async with Engine(providers=gated.provider(), concurrency=2) as engine:
            held = engine.submit([Task("held", key="held")])
            done = engine.submit([Task("答完了", key="quick")], run_id="r-quick")
            await done.wait()
            engine.forget(done)
            engine.forget(held)  # still running: kept
            assert [r.id for r in engine.runs] == [held.id]
            with pytest.raises(FanoutError):
                engine.get_run("r-quick")
            gated.open("held")
            await held.wait()
            assert held.result("held").text == "answer to held"  # type: ignore[union-attr]

    arun(main)
