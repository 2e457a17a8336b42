"""`fanout cancel` from another process: the process running the run stops it."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from fanout import Engine, Task
from fanout.store import queries
from fanout.store.sqlite import SqliteStore, connect
from tests.engine.support import Gated, arun


def test_a_cancel_asked_in_the_store_stops_the_run_that_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> None:
        gate = Gated(["t0", "t1"])
        async with Engine(providers=gate.provider("py"), store=SqliteStore(path)) as e:
            run = e.submit([Task(f"t{i}", key=f"k{i}") for i in range(5)])
            await gate.wait_started("t0")
            for _ in range(1000):  # until its first batch is committed
                if await e.store.run_info(run.id) is not None:
                    break
                await asyncio.sleep(0.01)
            with contextlib.closing(connect(path)) as db:
                assert queries.request_cancel(db, run.id, "stop it") == "asked"
            m = await run.wait()  # the heartbeat picks the request up
        assert run.status == "cancelled"
        assert m["cancel_reason"] == "stop it"
        assert sorted(gate.cancelled) == ["t0", "t1"]
        with contextlib.closing(connect(path)) as db:
            assert queries.request_cancel(db, run.id, "again") == "cancelled"

    arun(main)


def test_a_run_no_process_holds_is_marked_cancelled_at_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def main() -> str:
        gate = Gated(["t1"])
        async with Engine(providers=gate.provider("py"), store=SqliteStore(path)) as e:
            run = e.submit([Task(f"t{i}", key=f"k{i}") for i in range(2)])
            await gate.wait_started("t1")
            run.interrupt(0)
            await run.wait()
        return run.id

    run_id = arun(main)
    with contextlib.closing(connect(path)) as db:
        assert queries.request_cancel(db, run_id, "no more") == "cancelled"
        assert queries.run_info(db, run_id)["status"] == "cancelled"  # type: ignore[index]
