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
from fanout.engine.sketch import LOG_GAMMA, LatencySketch
from fanout.launch import EngineChoice, RunOptions, engine_setup
from fanout.store.base import DoneGroup
from fanout.store.lean import SAMPLE, done_groups, load_open_run
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

    run_id = asyncio.run(_halfway(src, out, order, options, store))

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

    figures = figures_from_store(store, run_id)
    assert figures["attempts"] > summary["done"]  # some 500s were retried, in both halves
    assert {k: figures[k] for k in COMPARED} == {k: summary[k] for k in COMPARED}


def test_a_resume_reads_the_input_from_its_mark_and_only_if_the_mark_holds(
    tmp_path: Path,
) -> None:
    # a batch in line order leaves a mark in the store (the byte offset and task of the
    # first line of the block it added last); a resume checks the line there is the task's
    # and reads on from it, not from the top
    import os

    from fanout.batch.stream import resume_mark
    from fanout.store.sqlite import opened

    lines = 2000
    src = tmp_path / "输入.jsonl"
    rows = [{"id": f"问{i}", "prompt": f"请解释第{i}个概念"} for i in range(lines)]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    src.write_text("\n" + text, encoding="utf-8")  # a blank first line: numbers shift by one
    out = tmp_path / "结果.jsonl"
    store = tmp_path / "运行.db"
    options = RunOptions(choice=EngineChoice(sim_latency="0", concurrency=8), cache=True)

    async def first() -> str:
        plan = plan_batch(src, out, "input", options)
        started = await start_batch(plan, options, store_path=store, window=WINDOW)
        seen = [0]

        def stop(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                seen[0] += 1
                if seen[0] == lines // 2:
                    started.launched.interrupt(now=True)

        started.launched.run.listen(stop)
        assert (await started.finish()).interrupted
        return started.launched.run.id

    run_id = asyncio.run(first())
    with opened(store) as db:
        mark = resume_mark(db, run_id, src, None, 1 << 20)
        (stored,) = db.execute("SELECT count(*) FROM tasks").fetchone()
    assert mark is not None
    offset, line, n = mark
    assert stored - WINDOW <= n < stored
    assert line == n + 2  # the blank first line
    assert src.read_bytes()[offset:].startswith(json.dumps(rows[n], ensure_ascii=False).encode())

    # the same bytes but another line there (size and mtime kept): the mark does not hold
    st = os.stat(src)
    swapped = [*rows[:n], rows[n + 1], rows[n], *rows[n + 2 :]]  # two lines of one length
    changed = tmp_path / "改过.jsonl"
    changed.write_text(
        "\n" + "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in swapped),
        encoding="utf-8",
    )
    assert changed.stat().st_size == st.st_size
    with opened(store) as db:
        assert resume_mark(db, run_id, changed, None, 1 << 20) is None

    async def second() -> tuple[dict[str, Any], int]:
        resumed = await resume_batch(run_id, store_path=store)
        done = await resumed.finish()
        assert resumed.feed is not None
        return done.summary, resumed.feed.read_from

    summary, read_from = asyncio.run(second())
    assert read_from == line
    assert summary["done"] == lines, summary
    got = [json.loads(x)["custom_id"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert got == [f"问{i}" for i in range(lines)]


def test_a_resume_whose_stored_tasks_all_finished_goes_on_with_the_rest_of_the_file(
    tmp_path: Path,
) -> None:
    # every task the store holds is done but the file goes on: the resumed run must not
    # end there (it once closed at once, with the stored tasks as its total)
    lines = 600
    src = tmp_path / "输入.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"问{i}", "prompt": f"第{i}题"}, ensure_ascii=False) + "\n"
            for i in range(lines)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "结果.jsonl"
    store = tmp_path / "运行.db"
    options = RunOptions(choice=EngineChoice(sim_latency="0", concurrency=8), cache=True)

    async def first() -> str:
        plan = plan_batch(src, out, "input", options)
        started = await start_batch(plan, options, store_path=store, window=8)
        seen = [0]

        def stop(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                seen[0] += 1
                if seen[0] == lines // 2:
                    started.launched.interrupt()

        started.launched.run.listen(stop)
        assert (await started.finish()).interrupted
        return started.launched.run.id

    run_id = asyncio.run(first())
    with contextlib.closing(sqlite3.connect(store)) as db:
        # as a SIGKILL would leave it just after a block finished: the tasks from the first
        # one without a done result on were never added
        done = {n for (n,) in db.execute("SELECT n FROM results WHERE state = 'done'")}
        cut = min(set(range(lines + 1)) - done)
        for table in ("tasks", "attempts", "results"):
            db.execute(f"DELETE FROM {table} WHERE n >= ?", (cut,))
        db.commit()
        (stored,) = db.execute("SELECT count(*) FROM tasks").fetchone()
        (finished,) = db.execute("SELECT count(*) FROM results WHERE state = 'done'").fetchone()
    assert 0 < finished == stored < lines

    async def second() -> dict[str, Any]:
        resumed = await resume_batch(run_id, store_path=store)
        return (await resumed.finish()).summary

    summary = asyncio.run(second())
    assert (summary["total"], summary["done"]) == (lines, lines)
    got = [json.loads(x)["custom_id"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert got == [f"问{i}" for i in range(lines)]


async def _halfway(src: Path, out: Path, order: Order, options: RunOptions, store: Path) -> str:
    """A streamed batch of `src` interrupted once half its lines have finished: its id."""
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


def _sketch(groups: list[DoneGroup]) -> LatencySketch:
    s = LatencySketch()
    for g in groups:
        if g.called:
            s.add_bucket(g.bucket, g.count, g.lo, g.hi)
    return s


def _sums(groups: list[DoneGroup]) -> dict[tuple[str | None, bool], list[int]]:
    """(model, called) -> [results, input tokens, output tokens] (the cache answers' model
    and tokens left out: nothing was called or spent for them)."""
    out: dict[tuple[str | None, bool], list[int]] = {}
    for g in groups:
        u = out.setdefault((g.model if g.called else None, g.called), [0, 0, 0])
        u[0] += g.count
        if g.called:
            u[1] += g.input_tokens
            u[2] += g.output_tokens
    return out


def _walks_and_sorts(db: sqlite3.Connection, sql: str) -> bool:
    """Whether a statement walks all of a run's rows of a table (a search by `rid` alone)
    and sorts (a temporary b-tree): a sort of every done row, say."""
    plan = [row[-1] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
    walks = any(p.startswith(("SCAN ", "SEARCH ")) and p.endswith("(rid=?)") for p in plan)
    return walks and any("TEMP B-TREE" in p for p in plan)


def test_a_lean_read_counts_exactly_sorts_no_done_rows_and_samples_latencies_honestly(
    tmp_path: Path,
) -> None:
    # above its latency sample a lean read takes the latency buckets from an even sample of
    # the done results (the counts and tokens from one plain pass, exact); at or below it,
    # every one: both against the older grouped read (`done_groups`), exact by design
    src = tmp_path / "输入.jsonl"
    _write(src)
    store = tmp_path / "运行.db"
    choice = EngineChoice(sim_latency="0", concurrency=8, sim_faults="500=0.05", seed=7)
    options = RunOptions(choice=choice, cache=True)
    run_id = asyncio.run(_halfway(src, tmp_path / "结果.jsonl", "input", options, store))
    with contextlib.closing(sqlite3.connect(store)) as db:
        exact = load_open_run(db, run_id, {"问3"}, LOG_GAMMA)
        statements: list[str] = []
        db.set_trace_callback(statements.append)
        sampled = load_open_run(db, run_id, {"问3"}, LOG_GAMMA, latency_sample=300)
        db.set_trace_callback(None)
        assert exact is not None
        assert sampled is not None
        (rid,) = db.execute("SELECT rid FROM runs").fetchone()
        live = json.dumps([t.n for t in exact.snap.tasks])
        grouped = done_groups(db, rid, live, LOG_GAMMA)
        sorting = [q for q in statements if _walks_and_sorts(db, q)]
        (done,) = db.execute("SELECT count(*) FROM results WHERE state = 'done'").fetchone()
    assert not sorting, sorting
    assert done > 1000  # well above the sample of 300
    assert [t.n for t in sampled.snap.tasks] == [t.n for t in exact.snap.tasks]
    assert 1 + SAMPLE <= len(exact.snap.tasks) < 1 + SAMPLE + WINDOW + 200  # 问3, newest, open
    assert (sampled.stored, sampled.lanes, sampled.retries) == (
        exact.stored,
        exact.lanes,
        exact.retries,
    )
    assert sorted(sampled.attempt_totals, key=str) == sorted(exact.attempt_totals, key=str)
    assert exact.lanes == {"default": exact.stored}
    for read in (exact, sampled):
        assert _sums(read.done) == _sums(grouped)  # counts and tokens: exact
    whole, fully, part = _sketch(grouped), _sketch(exact.done), _sketch(sampled.done)
    buckets = [(g.bucket, g.count) for g in exact.done if g.called]
    by_bucket: dict[int | None, int] = {}
    for g in grouped:
        if g.called:
            by_bucket[g.bucket] = by_bucket.get(g.bucket, 0) + g.count
    assert sorted(buckets, key=str) == sorted(by_bucket.items(), key=str)
    for q in (50, 95, 99):
        assert fully.percentile(q) == whole.percentile(q)
        # every 5th task: its percentile is the whole's at a nearby rank (5 sd for p50)
        assert whole.percentile(q - 15) <= part.percentile(q) <= whole.percentile(min(100, q + 15))
    assert len(part) == len(whole)


def test_a_run_of_several_lanes_and_models_is_read_grouped_and_resumes_to_the_same_figures(
    tmp_path: Path,
) -> None:
    # the plain passes hold for one lane, agent and model; a run of several is read the
    # grouped way (exact): the lanes and the per-model tokens come out right either way
    src = tmp_path / "输入.jsonl"
    rows = [
        {"id": f"问{i}", "prompt": f"请解释第{i}个概念", "lane": "快" if i % 3 else "慢"}
        | ({"model": "sim-2"} if i % 5 == 0 else {})
        for i in range(1, LINES + 1)
    ]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    store = tmp_path / "运行.db"
    out = tmp_path / "结果.jsonl"
    choice = EngineChoice(sim_latency="0", concurrency=8, sim_faults="500=0.05", seed=7)
    options = RunOptions(choice=choice, cache=True)
    run_id = asyncio.run(_halfway(src, out, "input", options, store))
    with contextlib.closing(sqlite3.connect(store)) as db:
        read = load_open_run(db, run_id, set(), LOG_GAMMA)
        assert read is not None
        lanes = dict(db.execute("SELECT lane, count(*) FROM tasks GROUP BY lane"))
        models = dict(
            db.execute("SELECT model, count(*) FROM results WHERE state = 'done' GROUP BY model")
        )
    assert read.lanes == lanes
    assert set(lanes) == {"快", "慢"}
    assert len(models) == 2  # both models answered before the interruption
    assert {g.lane for g in read.done} == {"快", "慢"}
    loaded = sum(1 for t in read.snap.tasks if t.n in read.snap.results)
    assert sum(g.count for g in read.done) + loaded >= sum(models.values())

    async def second() -> dict[str, Any]:
        resumed = await resume_batch(run_id, store_path=store)
        return (await resumed.finish()).summary

    summary = asyncio.run(second())

    figures = figures_from_store(store, run_id)
    assert summary["done"] == LINES
    assert {k: figures[k] for k in COMPARED} == {k: summary[k] for k in COMPARED}


def figures_from_store(store: Path, run_id: str) -> dict[str, Any]:
    """The run's figures as `fanout report` computes them, from the whole store."""

    async def read() -> dict[str, Any]:
        s = SqliteStore(store)
        try:
            snap = await s.snapshot(run_id)
        finally:
            await s.close()
        assert snap is not None
        return metrics_from_snapshot(snap)

    return asyncio.run(read())
