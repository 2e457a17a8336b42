"""The SQLite store on its own: schema by named migrations, idempotent batches, reads."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from fanout import Engine, Task
from fanout.store import queries
from fanout.store.base import (
    CACHE_STORE,
    AttemptFailed,
    AttemptStarted,
    Heartbeat,
    ResultRecorded,
    ResultsDropped,
    RunClosed,
    RunOpened,
    RunResumed,
    SinkAcked,
    TasksAdded,
)
from fanout.store.migrations import MIGRATIONS, migrate
from fanout.store.sqlite import SqliteStore, connect, data_dir, default_path
from fanout.tasks import ErrorInfo, Result, TaskState
from tests.engine.support import arun


def test_the_store_lives_in_fanout_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_HOME", str(tmp_path / "home"))
    assert data_dir() == tmp_path / "home"
    assert default_path() == tmp_path / "home" / "fanout.db"
    monkeypatch.delenv("FANOUT_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    if data_dir().parent == tmp_path / "xdg":  # Linux
        assert default_path() == tmp_path / "xdg" / "fanout" / "fanout.db"


def test_migrations_are_recorded_by_name_and_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with contextlib.closing(connect(path)) as db:
        assert migrate(db) == [name for name, _ in MIGRATIONS]
        assert migrate(db) == []
        names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [name for name, _ in MIGRATIONS]
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def _ops(run_id: str) -> tuple[list[Task], list[object]]:
    tasks = [Task(f"p{i}", key=f"k{i}") for i in range(3)]
    for i, t in enumerate(tasks):
        t.n = i
    ok = Result(tasks[0], TaskState.DONE, text="answer", attempts=1, latency_s=0.5)
    err = ErrorInfo("transient", "server_error", "boom", 500)
    failed = Result(tasks[1], TaskState.FAILED, attempts=2, error=err, latency_s=0.25)
    ops: list[object] = [
        RunOpened(run_id, "tasks", 1000.0, {"x": 1}, {"model": "m"}, "me", 4),
        TasksAdded(run_id, tasks, ['{"prompt":"p0"}', None, None]),
        AttemptStarted(run_id, 0, 1, 1000.1),
        AttemptStarted(run_id, 1, 1, 1000.1),
        AttemptFailed(run_id, 1, 1, 0.2, err),
        AttemptStarted(run_id, 1, 2, 1000.4),
        ResultRecorded(run_id, 0, ok, 0.5, b"k" * 32, b"h" * 32, CACHE_STORE),
        ResultRecorded(run_id, 1, failed, 0.25),
        AttemptStarted(run_id, 2, 1, 1000.5),  # never ends: "running" at a crash
        SinkAcked(run_id, "out", 7),
        Heartbeat(run_id, "me", 1001.0, 1020.0),
    ]
    return tasks, ops


def test_a_batch_is_applied_once_even_when_written_twice(tmp_path: Path) -> None:
    async def main() -> None:
        store = SqliteStore(tmp_path / "s.db")
        tasks, ops = _ops("r-1")
        await store.write(ops)  # type: ignore[arg-type]
        await store.write(ops)  # type: ignore[arg-type]
        snap = await store.snapshot("r-1")
        assert snap is not None
        assert [t.key for t in snap.tasks] == ["k0", "k1", "k2"]
        assert snap.tasks[0].spec == '{"prompt":"p0"}'
        assert sorted(snap.results) == [0, 1]
        assert snap.results[0].text == "answer"
        assert snap.results[1].error == ErrorInfo("transient", "server_error", "boom", 500)
        assert snap.attempts == [
            (0, 1, "done", None, 0.5),
            (1, 1, "error", "server_error", 0.2),
            (1, 2, "failed", "server_error", 0.25),
            (2, 1, None, None, None),
        ]
        assert snap.tries() == {0: 1, 1: 2, 2: 1}
        assert snap.acks == {"out": 7}
        assert snap.segments[0].last_seen == 1001.0
        results = await store.results("r-1", tasks)
        assert [r.task for r in results] == tasks[:2]
        assert await store.sink_position("r-1", "out") == 7
        assert await store.sink_position("r-1", "other") == -1
        hits = await store.cache_get([b"k" * 32, b"x" * 32], 0.0)
        assert list(hits) == [b"k" * 32]
        assert hits[b"k" * 32].text == "answer"
        resumed = [RunResumed("r-1", 1001.5, {}, {}, "you", 2), ResultsDropped("r-1", [1])]
        await store.write(resumed)  # type: ignore[arg-type]
        await store.write(resumed)  # type: ignore[arg-type]
        snap = await store.snapshot("r-1")
        assert snap is not None
        assert len(snap.segments) == 2
        assert sorted(snap.results) == [0]
        assert snap.attempts[-1] == (2, 1, "interrupted", None, None)
        await store.write([RunClosed("r-1", "done", 1002.0, 1.5)])
        info = await store.run_info("r-1")
        assert info is not None
        assert (info["status"], info["tasks"], info["results"]) == ("done", 3, 1)
        await store.close()

    arun(main)


def test_results_without_tasks_get_stand_ins_with_key_and_meta(tmp_path: Path) -> None:
    async def main() -> None:
        async with Engine(store=SqliteStore(tmp_path / "s.db")) as engine:
            run = engine.submit([Task(f"p{i}", key=f"k{i}", meta={"line": i}) for i in range(5)])
            await run.wait()
        with contextlib.closing(connect(tmp_path / "s.db")) as db:
            results = queries.load_results(db, run.id)
        assert [r.key for r in results] == [f"k{i}" for i in range(5)]
        assert [r.task_id for r in results] == [f"{run.id}-{i}" for i in range(5)]
        assert [r.meta for r in results] == [{"line": i} for i in range(5)]

    arun(main)


def test_two_stores_on_one_file_write_at_once_without_corruption(tmp_path: Path) -> None:
    path = tmp_path / "s.db"

    async def one(n: int) -> str:
        async with Engine(store=SqliteStore(path), concurrency=8) as engine:
            run = engine.submit([Task(f"{n}-{i}") for i in range(300)])
            await run.wait()
            assert len(await run.results()) == 300
            return run.id

    async def main() -> list[str]:
        return list(await asyncio.gather(one(1), one(2), one(3)))

    ids = arun(main)
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for rid in ids:
            assert queries.run_info(db, rid)["results"] == 300  # type: ignore[index]
