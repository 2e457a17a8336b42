"""The store when the world is not kind: old and new schemas, a full disk, a read-only home,
a lock held by another process, leases whose holder vanished or whose pid was reused, and
SIGKILL mid-migration. Real SQLite files, real mounts and processes; each case ends in one
clear line and no lost data."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout import ConfigError, Engine, Task
from fanout.store import migrations
from fanout.store import sqlite as store_sqlite
from fanout.store.base import RunBusy
from fanout.store.migrations import MIGRATIONS
from fanout.store.queries import HOST
from fanout.store.sqlite import SqliteStore, connect, open_store_file
from tests.engine.support import Gated, arun, until

ROOT = Path(__file__).resolve().parents[2]
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def fanout(*args: str | Path, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "fanout", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jobs(path: Path, n: int) -> Path:
    # long prompts, so a few hundred kB hold the run: a small disk fills mid-run
    rows = [{"id": f"问{i}", "prompt": f"解释第{i}个概念。" + "细节" * 150} for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs), mounted at `where`; needs root."""
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


needs_mounts = pytest.mark.skipif(not IS_ROOT, reason="mounting a small tmpfs needs root")


# -- schema versions ------------------------------------------------------------------------


def _m999_labels(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE runs ADD COLUMN label TEXT")


def _store_with_a_run(path: Path) -> str:
    async def main() -> str:
        async with Engine(providers=_echo(), store=SqliteStore(path)) as e:
            run = e.submit([Task(f"题{i}", key=f"k{i}") for i in range(3)])
            await run.wait()
            return run.id

    return arun(main)


def _echo() -> object:
    from fanout import CallableProvider, Request

    async def answer(req: Request) -> str:
        return "答：" + req.prompt_text()

    return CallableProvider(answer, name="py")


def test_an_older_store_is_migrated_and_keeps_its_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "旧.db"
    run_id = _store_with_a_run(path)  # written by "this" version: the older one below
    monkeypatch.setattr(migrations, "MIGRATIONS", (*MIGRATIONS, ("m999_labels", _m999_labels)))
    open_store_file(path)  # the newer version opens it: its one new migration is applied
    with contextlib.closing(connect(path)) as db:
        names = [r[0] for r in db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [*(n for n, _ in MIGRATIONS), "m999_labels"]
        assert db.execute("SELECT label FROM runs WHERE id = ?", (run_id,)).fetchone() == (None,)
        texts = [r[0] for r in db.execute("SELECT text FROM results ORDER BY n")]
    assert texts == [f"答：题{i}" for i in range(3)]


def test_a_store_from_a_newer_fanout_is_refused_and_left_untouched(tmp_path: Path) -> None:
    home = tmp_path / "home"
    path = home / "fanout.db"
    home.mkdir()
    _store_with_a_run(path)
    with contextlib.closing(connect(path)) as db:
        db.execute("INSERT INTO _migrations VALUES ('m999_from_the_future', 0)")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = digest(path)
    with pytest.raises(ConfigError, match=r"written by a newer fanout \(schema m999_from_the"):
        SqliteStore(path)
    p = fanout("runs", home=home)
    assert p.returncode == 2
    assert p.stderr.splitlines() == [
        f"fanout: the run store {path} was written by a newer fanout (schema m999_from_the_future"
        " unknown to this version): upgrade fanout, or set FANOUT_HOME to another folder"
    ]
    assert digest(path) == before


_SLOW_MIGRATION = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fanout.store import migrations
    from fanout.store.sqlite import open_store_file

    def m999_slow(db):
        db.execute("CREATE TABLE half_done (x)")
        db.execute("INSERT INTO half_done VALUES (1)")
        Path(sys.argv[2]).write_text("inside")
        time.sleep(60)  # killed here, inside the migration's transaction

    migrations.MIGRATIONS = (*migrations.MIGRATIONS, ("m999_slow", m999_slow))
    open_store_file(sys.argv[1])
    """
)


def test_sigkill_during_a_migration_leaves_the_store_at_the_migration_before(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    run_id = _store_with_a_run(path)
    marker = tmp_path / "marker"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_MIGRATION, str(path), str(marker)])
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None, "the migrating process ended before its migration"
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    store = SqliteStore(path)  # opens: the killed transaction rolled back, nothing half-done
    with contextlib.closing(connect(path)) as db:
        assert "m999_slow" not in {r[0] for r in db.execute("SELECT name FROM _migrations")}
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables
        assert db.execute(
            "SELECT count(*) FROM results r JOIN runs USING (rid) WHERE id = ?", (run_id,)
        ).fetchone() == (3,)
    arun(store.close)


# -- a lock held by another process ---------------------------------------------------------

_HOLD_LOCK = textwrap.dedent(
    """
    import sqlite3, sys, time
    from pathlib import Path
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    Path(sys.argv[2]).write_text("locked")
    sys.stdin.readline()  # held until told
    db.execute("COMMIT")
    """
)


@contextlib.contextmanager
def lock_held(path: Path, marker: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD_LOCK, str(path), str(marker)], stdin=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert proc.poll() is None
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc
    finally:
        if proc.poll() is None:
            assert proc.stdin is not None
            proc.stdin.close()
        proc.wait(timeout=60)


def test_a_store_locked_by_another_process_is_waited_for_then_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    path = home / "fanout.db"
    home.mkdir()
    _store_with_a_run(path)
    # a lock held past the wait: one line that says who holds what
    monkeypatch.setattr(store_sqlite, "BUSY_TIMEOUT_S", 0.3)
    with (
        lock_held(path, tmp_path / "m1"),
        pytest.raises(ConfigError, match=f"the run store {path} stayed locked by another"),
    ):
        SqliteStore(path)
    # a lock released while fanout waits: the command goes on and its run is kept
    src = jobs(tmp_path / "作业.jsonl", 5)
    out = tmp_path / "out.jsonl"
    with lock_held(path, tmp_path / "m2") as holder:
        cli = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "fanout",
                "batch",
                str(src),
                "-o",
                str(out),
                "--no-progress",
                "--sim-latency",
                "1ms",
            ],
            env={**os.environ, "FANOUT_HOME": str(home)},
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # give it time to reach the lock (it cannot have finished: the lock is held)
        time.sleep(0.5)
        assert cli.poll() is None, cli.communicate()
        assert holder.stdin is not None
        holder.stdin.write("go\n")
        holder.stdin.flush()
    _, stderr = cli.communicate(timeout=120)
    assert cli.returncode == 0, stderr
    assert len(out.read_text("utf-8").splitlines()) == 5


# -- leases whose holder is gone, expired or whose pid now names another process -----------


def _lease_of(path: Path, run_id: str, pid: int, until: float) -> None:
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(
            "UPDATE runs SET lease_owner = 'someone', lease_pid = ?, lease_host = ?,"
            " lease_until = ?, status = 'interrupted' WHERE id = ?",
            (pid, HOST, until, run_id),
        )


def test_a_lease_whose_pid_was_reused_holds_until_it_expires(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    tasks = [Task(f"t{i}", key=f"k{i}") for i in range(3)]

    async def main() -> None:
        gate = Gated(["t2"])
        async with Engine(providers=gate.provider("py"), store=SqliteStore(path)) as e:
            run = e.submit(tasks)
            await gate.wait_started("t2")
            await until(lambda: run.finished == 2)
            run.interrupt(0)
            await run.wait()
        # the holder crashed and its pid now names another live process (this one's
        # parent-less sleeper): the pid check cannot tell, the lease's time must
        sleeper = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import time; time.sleep(120)"
        )
        try:
            _lease_of(path, run.id, sleeper.pid, time.time() + 600)
            async with Engine(providers=_echo(), store=SqliteStore(path)) as e:
                with pytest.raises(RunBusy, match=f"process {sleeper.pid} on {HOST}"):
                    await e.resume(run.id)
            _lease_of(path, run.id, sleeper.pid, time.time() - 1)  # no heartbeat: expired
            async with Engine(providers=_echo(), store=SqliteStore(path)) as e:
                resumed = await e.resume(run.id)
                m = await resumed.wait()
                results = await resumed.results()
            assert m["done"] == 3
            assert [r.text for r in results] == ["answer to t0", "answer to t1", "答：t2"]
        finally:
            sleeper.kill()
            await sleeper.wait()

    arun(main)


# -- a full disk, a read-only home ----------------------------------------------------------


@needs_mounts
def test_a_full_disk_during_a_run_stops_it_with_one_line_and_it_resumes(tmp_path: Path) -> None:
    src = jobs(tmp_path / "作业.jsonl", 150)
    out = tmp_path / "结果.jsonl"
    with small_disk(tmp_path / "home", "160k") as home:
        p = fanout("batch", src, "-o", out, "--no-progress", "--sim-latency", "1ms", home=home)
        assert p.returncode != 0
        assert "Traceback" not in p.stderr
        lines = [x for x in p.stderr.splitlines() if "run store" in x]
        assert len(lines) == 1, p.stderr
        assert f"the run store {home / 'fanout.db'} is full" in lines[0]
        assert "free space on its disk" in lines[0]
        assert not out.exists()
        subprocess.run(["mount", "-o", "remount,size=8m", str(home)], check=True)
        runs = fanout("runs", "--json", home=home)
        assert runs.returncode == 0, runs.stderr
        stored = json.loads(runs.stdout)
        if stored:  # the run was recorded before the disk filled: it goes on
            r = fanout("resume", stored[0]["id"], "--no-progress", home=home)
        else:  # its first batch did not fit: nothing was kept, so it runs again whole
            r = fanout("batch", src, "-o", out, "--no-progress", "--sim-latency", "1ms", home=home)
        assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert [x["custom_id"] for x in rows] == [f"问{i}" for i in range(150)]
    assert all(x["error"] is None for x in rows)


@needs_mounts
@pytest.mark.parametrize("order", ["input", "completion"])
def test_a_full_disk_during_the_output_write_keeps_the_old_file(tmp_path: Path, order: str) -> None:
    src = jobs(tmp_path / "作业.jsonl", 150)
    with small_disk(tmp_path / "out", "64k") as disk:
        out = disk / "结果.jsonl"
        out.write_text("上一次的结果\n" * 2000, "utf-8")  # the user's earlier file
        before = digest(out)
        p = fanout(
            "batch",
            src,
            "-o",
            out,
            "--order",
            order,
            "--no-progress",
            "--sim-latency",
            "1ms",
            home=tmp_path / "home",
        )
        assert p.returncode == 2
        assert "Traceback" not in p.stderr
        last = p.stderr.splitlines()[-1]
        assert last.startswith(f"fanout: could not write {out}: No space left on device;")
        run_id = last.rsplit("fanout results ", 1)[1].split()[0]
        assert digest(out) == before
        assert sorted(x.name for x in disk.iterdir()) == ["结果.jsonl"]  # no temp file left
    # the results were kept: written elsewhere in full
    again = tmp_path / "again.jsonl"
    r = fanout("results", run_id, "-o", again, home=tmp_path / "home")
    assert r.returncode == 0, r.stderr
    assert len(again.read_text("utf-8").splitlines()) == 150


@pytest.fixture
def read_only_home(tmp_path: Path) -> Iterator[Path]:
    """A FANOUT_HOME holding a store with one run, then made read-only: a read-only mount as
    root (root ignores permission bits), its permission bits otherwise."""
    home = tmp_path / "home"
    if IS_ROOT:
        with small_disk(home, "8m"):
            _store_with_a_run(home / "fanout.db")
            subprocess.run(["mount", "-o", "remount,ro", str(home)], check=True)
            yield home
    else:
        home.mkdir()
        _store_with_a_run(home / "fanout.db")
        home.chmod(0o555)
        (home / "fanout.db").chmod(0o444)
        try:
            yield home
        finally:
            home.chmod(0o755)


def test_a_read_only_fanout_home_is_one_clear_line(read_only_home: Path, tmp_path: Path) -> None:
    db = read_only_home / "fanout.db"
    before = digest(db)
    src = jobs(tmp_path / "作业.jsonl", 3)
    for args in (("runs",), ("batch", src, "-o", tmp_path / "out.jsonl", "--no-progress")):
        p = fanout(*args, home=read_only_home)
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert p.stderr.splitlines()[-1].startswith(f"fanout: cannot write the run store {db} (")
        assert "set FANOUT_HOME to a writable folder" in p.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert digest(db) == before


# -- SIGKILL at the edges: during the output write, during resume start-up ------------------


def _spawn(*args: str | Path, home: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(home)
    return subprocess.Popen(
        [sys.executable, "-m", "fanout", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def test_sigkill_during_the_output_write_leaves_the_old_file_and_resume_writes_it(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    src = jobs(tmp_path / "作业.jsonl", 3000)
    out = tmp_path / "结果.jsonl"
    out.write_text("上一次的结果\n", "utf-8")
    before = digest(out)
    proc = _spawn("batch", src, "-o", out, "--no-progress", "--sim-latency", "0ms", home=home)
    assert proc.stderr is not None
    run_id = proc.stderr.readline().split()[1]
    # the output is written to a hidden temp file beside it, then renamed: kill while the
    # temp file is there (the run is done by then, the file not yet in place)
    deadline = time.monotonic() + 300
    while not any(p.name.endswith(".tmp") and p.stat().st_size > 0 for p in tmp_path.iterdir()):
        assert proc.poll() is None, "it ended before its output write was caught"
        assert time.monotonic() < deadline
        time.sleep(0.001)
    proc.kill()
    proc.communicate()
    assert digest(out) == before  # the old file, whole: never half of the new one
    killed = {p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")}
    r = fanout("resume", run_id, "--no-progress", home=home)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert [x["custom_id"] for x in rows] == [f"问{i}" for i in range(3000)]
    # the resume leaves no temp file of its own (the killed one's stays: it cannot tell a
    # dead writer's temp file from a live one's)
    assert {p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")} == killed


def test_sigkill_during_resume_start_up_loses_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    src = jobs(tmp_path / "作业.jsonl", 40)
    out = tmp_path / "结果.jsonl"
    first = _spawn(
        "batch", src, "-o", out, "--no-progress", "--sim-latency", "300ms", "--concurrency", "4",
        home=home,
    )  # fmt: skip
    assert first.stderr is not None
    run_id = first.stderr.readline().split()[1]
    # killed once its run is in the store (the "run r-..." line comes before that)
    deadline = time.monotonic() + 120
    while not _results(home / "fanout.db", run_id):
        assert first.poll() is None
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.kill()
    first.communicate()
    # resumes killed at start-up: before, while and after they open the store and claim
    # the run (each start is at a different point of its start-up)
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0):
        proc = _spawn("resume", run_id, "--no-progress", home=home)
        time.sleep(delay)
        proc.kill()
        proc.communicate()
    r = fanout("resume", run_id, "--no-progress", "--json", home=home)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text("utf-8").splitlines()]
    assert [x["custom_id"] for x in rows] == [f"问{i}" for i in range(40)]
    assert all(x["error"] is None for x in rows)
    with contextlib.closing(connect(home / "fanout.db")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        states = db.execute(
            "SELECT state, count(*) FROM results JOIN runs USING (rid) WHERE id = ? GROUP BY state",
            (run_id,),
        ).fetchall()
    assert states == [("done", 40)]


def _results(db_path: Path, run_id: str) -> int:
    if not db_path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        row = db.execute(
            "SELECT count(*) FROM results JOIN runs USING (rid) WHERE id = ?", (run_id,)
        ).fetchone()
    return int(row[0])


@needs_mounts
def test_a_full_disk_during_the_canvas_backup_leaves_the_canvas_as_it_was(
    tmp_path: Path,
) -> None:
    import shutil

    vault = tmp_path / "笔记库"
    shutil.copytree(ROOT / "examples" / "vault", vault)
    path = vault / "离散数学.canvas"
    before = digest(path)
    home = tmp_path / "home"
    with small_disk(home / "canvas-backups", "16k") as backups:
        (backups / "filler").write_bytes(b"\0" * 14000)  # the backups' disk is nearly full
        p = fanout(
            "canvas", "run", path, "--agents", "memory-anchor", "--sim-latency", "1ms",
            "--no-progress", home=home,
        )  # fmt: skip
        assert p.returncode == 2, p.stderr
        assert "Traceback" not in p.stderr
        assert p.stderr.splitlines()[-1] == (
            f"fanout: {path}: could not back up the canvas (No space left on device);"
            " tried 3 times; the canvas is as it was"
        )
        assert digest(path) == before
        # room again: the run goes on from the store and writes its notes
        (backups / "filler").unlink()
        run_id = p.stderr.splitlines()[0].split()[1]
        r = fanout("resume", run_id, "--no-progress", "--json", home=home)
        assert r.returncode == 0, r.stderr
        assert digest(path) != before
        assert [b.name for b in backups.rglob("*.canvas")]  # and the old canvas is kept
