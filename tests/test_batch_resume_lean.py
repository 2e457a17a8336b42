"""A streamed batch interrupted halfway and resumed: the resume loads only what is left
(the store keeps the finished lines), and its figures are those of the whole run, the same
as the report computes from everything stored."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fanout import launch
from fanout.batch.output import Order
from fanout.batch.run import plan_batch, resume_batch, start_batch
from fanout.engine.events import Event, TaskFinished
from fanout.engine.metrics import metrics_from_snapshot
from fanout.launch import EngineChoice, RunOptions, engine_setup
from fanout.store.lean import SAMPLE
from fanout.store.sqlite import SqliteStore
from tests.store.test_resume import COMPARED
from tests.test_batch_stream import LINES, WINDOW, _write


@pytest.mark.parametrize("order", ["input", "completion"])
def test_a_resumed_stream_loads_only_what_is_left(tmp_path: Path, order: Order) -> None:
    src = tmp_path / "输入.jsonl"
    bad = _write(src)  # with lines that depend on others, near and far
    out = tmp_path / "结果.jsonl"
    store = tmp_path / "运行.db"
    choice = EngineChoice(sim_latency="0", concurrency=8, sim_faults="500=0.05", seed=7)
    options = RunOptions(choice=choice, cache=True)

    async def first() -> str:
        plan = plan_batch(src, out, order, options)
        started = await start_batch(plan, options, store_path=store, window=WINDOW)
        run = started.launched.run
        seen = [0]

        def stop_halfway(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                seen[0] += 1
                if seen[0] == LINES // 2:
                    started.launched.interrupt(now=True)

        run.listen(stop_halfway)
        done = await started.finish()
        assert done.interrupted
        return run.id

    run_id = asyncio.run(first())

    with contextlib.closing(sqlite3.connect(store)) as db:
        (finished,) = db.execute("SELECT count(*) FROM results").fetchone()
        (stored,) = db.execute("SELECT count(*) FROM tasks").fetchone()
        with contextlib.closing(sqlite3.connect(tmp_path / "副本.db")) as copy:
            db.backup(copy)
    assert 0 < stored - finished <= WINDOW

    async def probe() -> tuple[int, int]:
        # the engine's lean resume on a copy of the store, before anything runs or any
        # sink lets finished tasks go: what it built is what it loaded
        engine = launch.shared_engine(engine_setup(choice), options, tmp_path / "副本.db")
        await engine.start()
        try:
            run = await engine.resume(run_id, lean={"问2900", "问3"})
            return sum(1 for t in run.tasks if t is not None), run.total
        finally:
            await engine.aclose()

    held, total = asyncio.run(probe())
    assert total == stored
    # the unfinished, the 2 lines depended on, the newest 16 done (their requests checked)
    assert held <= stored - finished + 2 + SAMPLE

    async def second() -> dict[str, Any]:
        resumed = await resume_batch(run_id, store_path=store)
        done = await resumed.finish()
        return done.summary

    summary = asyncio.run(second())
    assert summary["done"] == LINES - len(bad)
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    answered = [x["custom_id"] for x in lines if x["error"] is None]
    expected = [f"问{i}" for i in range(1, LINES + 1) if i not in bad]
    # completion order: the earlier half (from the store, not loaded) and the rest, once each
    assert (answered if order == "input" else sorted(answered)) == (
        expected if order == "input" else sorted(expected)
    )

    async def from_store() -> dict[str, Any]:
        s = SqliteStore(store)
        try:
            snap = await s.snapshot(run_id)
        finally:
            await s.close()
        assert snap is not None
        return metrics_from_snapshot(snap)

    figures = asyncio.run(from_store())
    assert figures["attempts"] > summary["done"]  # some 500s were retried, in both halves
    assert {k: figures[k] for k in COMPARED} == {k: summary[k] for k in COMPARED}
