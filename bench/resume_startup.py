"""Resume start-up, again and again on one killed store: launch of `fanout resume RUN` to
its first new durable result, wall and CPU seconds.

Killing a 1,000,000-line batch at 60 % takes minutes of CPU; this builds that store once
(`--build`, bench/scale.py's kill without its resume) and then, for each run, resumes a
fresh copy of it. The CPU seconds are the resumed process's (all its threads, read from
/proc when the first new result is seen); on a shared machine they are the figure the
load does not move. The child is killed once it is seen: only the start-up is measured.

    .venv/bin/python bench/resume_startup.py --build 1000000 --workdir /tmp/rs
    .venv/bin/python bench/resume_startup.py --workdir /tmp/rs --repeat 2 \\
        --python /path/to/other/python   # e.g. a PYTHONPATH wrapper for another commit
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from scale import batch_cmd, durable, kill_when_durable, make_input, results_from


def build(n: int, work: Path, at: float) -> None:
    """A batch of `n` lines killed with SIGKILL once `at` of them have a durable result:
    its store is `work`/killed."""
    src = work / f"in-{n}.jsonl"
    make_input(src, n)
    home = work / "killed"
    shutil.rmtree(home, ignore_errors=True)
    db = home / "fanout.db"
    env = {**os.environ, "FANOUT_HOME": str(home)}
    cmd = batch_cmd(src, work / "out.jsonl", 256, "input")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kill_when_durable(p, db, math.ceil(at * n))
    _, _, usage = os.wait4(p.pid, 0)
    print(f"killed at {durable(db)[1]:,} results, {usage.ru_utime + usage.ru_stime:.1f} CPU s")


def startup(work: Path, python: str) -> dict[str, Any]:
    """Resume a fresh copy of `work`/killed; its start-up."""
    home = work / "copy"
    shutil.rmtree(home, ignore_errors=True)
    shutil.copytree(work / "killed", home)
    db = home / "fanout.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rid, run_id = con.execute("SELECT rid, id FROM runs ORDER BY rid DESC LIMIT 1").fetchone()
        have = {n for (n,) in con.execute("SELECT n FROM results WHERE rid = ?", (rid,))}
    low = next(k for k in range(len(have) + 1) if k not in have)  # the first unanswered
    tail = results_from(db, low)
    tick = os.sysconf("SC_CLK_TCK")
    env = {**os.environ, "FANOUT_HOME": str(home)}
    load = Path("/proc/loadavg").read_text().split()[0]
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [python, "-m", "fanout", "resume", run_id, "--no-progress"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = cpu = None
    while p.poll() is None:
        if results_from(db, low) > tail:
            wall = time.perf_counter() - t0
            stat = Path(f"/proc/{p.pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu = (int(stat[11]) + int(stat[12])) / tick  # utime + stime, all threads
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    return {
        "done_before": len(have),
        "startup_wall_s": None if wall is None else round(wall, 2),
        "startup_cpu_s": cpu,
        "load_1min": float(load),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", type=int, default=None, help="kill a batch of N lines first")
    ap.add_argument("--kill-at", type=float, default=0.6)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fanout-resume"))
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    if a.build:
        build(a.build, a.workdir, a.kill_at)
    for _ in range(a.repeat):
        print(json.dumps(startup(a.workdir, a.python)), flush=True)


if __name__ == "__main__":
    main()
