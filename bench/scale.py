"""How `fanout batch` grows with the number of lines: wall per line, lines/s, peak RSS.

Each size runs `fanout batch` as its own process through its real path: the SQLite run
store (a fresh FANOUT_HOME per size), the result cache on, the output file written, the
in-process simulator at zero latency. The input is simple Chinese prompts, one per line.
Peak RSS is the child's own (`os.wait4`), so sizes do not mix.

    .venv/bin/python bench/scale.py --sizes 10000,100000,1000000 --concurrency 256

With `--kill-at 0.6` the largest size is also killed with SIGKILL once 60 % of its lines
have a durable result, then resumed: the figure is the resumed process's start-up (from
its launch to its first new durable result) and whether every line was answered once.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

FANOUT = [sys.executable, "-m", "fanout"]


def make_input(path: Path, n: int) -> None:
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as f:
            if sum(1 for _ in f) == n:
                return
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            line = {"id": f"q{i}", "prompt": f"请用一句话解释第{i}个概念:并行调用"}
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def batch_cmd(src: Path, out: Path, concurrency: int, order: str) -> list[str]:
    return [
        *FANOUT,
        "batch",
        str(src),
        "-o",
        str(out),
        "--provider",
        "sim",
        "--sim-latency",
        "0",
        "--concurrency",
        str(concurrency),
        "--order",
        order,
        "--cache",
    ]


def run_child(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int, float]:
    """(wall s, peak RSS MB, exit code, CPU s) of one child process. On a shared machine
    the CPU seconds (user + system) are the figure that does not depend on the load."""
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
        assert p.stderr is not None
        errors = p.stderr.read()  # to its end: the child has exited or closed it
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in (0, -9):
        sys.stderr.write(errors.decode(errors="replace")[-2000:])
    return wall, usage.ru_maxrss / 1024, code, usage.ru_utime + usage.ru_stime


def check_output(out: Path, n: int, order: str) -> bool:
    """Every line answered once (and in input order for --order input)."""
    ids: list[int] = []
    with out.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            if obj["error"] is not None:
                return False
            ids.append(int(obj["custom_id"][1:]))
    if order == "input":
        return ids == list(range(n))
    return sorted(ids) == list(range(n))


def durable(db: Path) -> tuple[str | None, int]:
    """The newest run's id and how many of its tasks have a durable result."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return None, 0
    try:
        row = con.execute("SELECT rid, id FROM runs ORDER BY rid DESC LIMIT 1").fetchone()
        if row is None:
            return None, 0
        (k,) = con.execute("SELECT count(*) FROM results WHERE rid = ?", (row[0],)).fetchone()
        return str(row[1]), int(k)
    except sqlite3.Error:
        return None, 0
    finally:
        con.close()


def kill_when_durable(p: subprocess.Popen[bytes], db: Path, target: int) -> None:
    """SIGKILL the batch `p` once `target` of its results are durable in `db`."""
    while p.poll() is None:
        time.sleep(0.2)
        # tasks are numbered in line order and finish about in that order: count them all
        # only once the results reach the target's number
        if results_from(db, target - 1) and durable(db)[1] >= target:
            p.send_signal(signal.SIGKILL)
            break


def results_from(db: Path, start: int) -> int:
    """How many results the newest run has for tasks numbered `start` and up: a look at
    the tail of the results' primary key, not a count of all of them (a poll that counts
    600,000 rows every 50 ms takes CPU from the very process it times)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        (k,) = con.execute(
            "SELECT count(*) FROM results WHERE rid = (SELECT max(rid) FROM runs) AND n >= ?",
            (start,),
        ).fetchone()
        return int(k)
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def attempts_of_committed(db: Path, run_id: str) -> dict[int, int]:
    """Task number -> attempts recorded, for each task with a committed result."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT r.n, count(a.attempt) FROM results r JOIN runs USING (rid)"
            " LEFT JOIN attempts a ON a.rid = r.rid AND a.n = r.n WHERE runs.id = ?"
            " GROUP BY r.n",
            (run_id,),
        )
        return {int(n): int(k) for n, k in rows}
    finally:
        con.close()


def kill_and_resume(
    src: Path, work: Path, n: int, concurrency: int, at: float, order: str
) -> dict[str, Any]:
    home = work / f"home-kill-{n}-{order}"
    subprocess.run(["rm", "-rf", str(home)], check=True)
    env = {**os.environ, "FANOUT_HOME": str(home)}
    out = work / f"out-kill-{n}-{order}.jsonl"
    db = home / "fanout.db"
    p = subprocess.Popen(
        batch_cmd(src, out, concurrency, order),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    kill_when_durable(p, db, math.ceil(at * n))
    p.wait()
    run_id, done = durable(db)
    assert run_id is not None, "the run never started"
    before = attempts_of_committed(db, run_id)
    low = next(k for k in range(n + 1) if k not in before)  # the first task unanswered
    tail = results_from(db, low)
    t0 = time.perf_counter()
    r = subprocess.Popen(
        [*FANOUT, "resume", run_id],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    startup = None
    while r.poll() is None:
        if results_from(db, low) > tail:
            startup = time.perf_counter() - t0
            break
        time.sleep(0.05)
    _, status, usage = os.wait4(r.pid, 0)
    r.returncode = os.waitstatus_to_exitcode(status)
    total = time.perf_counter() - t0
    ok = os.waitstatus_to_exitcode(status) == 0 and check_output(out, n, order)
    after = attempts_of_committed(db, run_id)
    # a task whose result was committed before the kill is never attempted again (one
    # answered but not yet committed when the kill came is: that is the kill's loss)
    again = sum(1 for k, tries in before.items() if after.get(k, 0) > tries)
    return {
        "committed_attempted_again": again,
        "lines": n,
        "order": order,
        "killed_at": done,
        "resume_startup_s": None if startup is None else round(startup, 2),
        "resume_total_s": round(total, 1),
        "resume_peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "all_answered_once": ok,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--order", choices=("input", "completion"), default="input")
    ap.add_argument("--kill-at", type=float, default=None)
    ap.add_argument("--kill-size", type=int, default=None, help="default: the largest size")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fanout-scale"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    print(
        "| lines | wall s | µs/line | lines/s | CPU s | CPU µs/line | lines/CPU s"
        " | peak RSS MB | every line once, in order |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|:--|")
    for n in sizes:
        src = a.workdir / f"in-{n}.jsonl"
        make_input(src, n)
        home = a.workdir / f"home-{n}"
        subprocess.run(["rm", "-rf", str(home)], check=True)
        out = a.workdir / f"out-{n}.jsonl"
        env = {**os.environ, "FANOUT_HOME": str(home)}
        wall, rss, code, cpu = run_child(batch_cmd(src, out, a.concurrency, a.order), env)
        ok = code == 0 and check_output(out, n, a.order)
        row = {
            "lines": n,
            "wall_s": round(wall, 2),
            "us_per_line": round(wall / n * 1e6, 1),
            "lines_per_s": round(n / wall),
            "peak_rss_mb": round(rss, 1),
            "cpu_s": round(cpu, 1),
            "cpu_us_per_line": round(cpu / n * 1e6, 1),
            "lines_per_cpu_s": round(n / cpu),
            "ok": ok,
        }
        rows.append(row)
        print(
            f"| {n:,} | {wall:.1f} | {row['us_per_line']} | {row['lines_per_s']:,} |"
            f" {cpu:.1f} | {row['cpu_us_per_line']} | {row['lines_per_cpu_s']:,} |"
            f" {rss:.0f} | {'yes' if ok else 'NO'} |",
            flush=True,
        )
    figures: dict[str, Any] = {"order": a.order, "concurrency": a.concurrency, "rows": rows}
    if a.kill_at is not None:
        n = a.kill_size or max(sizes)
        make_input(a.workdir / f"in-{n}.jsonl", n)
        figures["kill"] = kill_and_resume(
            a.workdir / f"in-{n}.jsonl", a.workdir, n, a.concurrency, a.kill_at, a.order
        )
        print(f"kill at {a.kill_at:.0%} and resume: {figures['kill']}", flush=True)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
