"""Crash and resume: `fanout batch` against the sim-server, SIGKILLed at random moments and
resumed each time, then checked.

The sim-server runs as its own process (with `--stats-file`) for the whole campaign and
counts, per sha256 of each request body, the answers it completed. The batch (N tasks, each
a different prompt, through the real OpenAI SDK) runs as a subprocess; once it has
committed a new result (so the kill lands while calls are under way, not while it starts),
it gets SIGKILL after a further random 0 to min(0.5, 4 / kills) s, and `fanout resume`
goes on with it, until `--kills` kills have happened; a last resume runs it to the end.

After each kill, once the server has settled (nothing in flight, nothing arriving), the
script takes a checkpoint: the server's completions by request hash (S_i), and the request
hashes of the results committed in the store (C_i, the `request_hash` column: the same
sha256 the server computes). Then it checks:

1. every task has exactly one result, done, and the output file has one line per task;
2. no committed request was ever answered again: for every checkpoint i and every hash h in
   C_i, S_final[h] == S_i[h];
3. every answer beyond the first is one a kill lost: per request hash h, with
   D_i[h] = S_i[h] - S_(i-1)[h] its completions in segment i, D_i[h] <= 1 and
   S_final[h] = 1 + #{i : D_i[h] = 1 and h not in C_i} (an answer that arrived but was not
   committed when the process died: the only thing that may be requested again);
4. so the total is N + sum(lost_i), lost_i being the answers segment i lost (reported, not
   bounded: a call's slot is free once its answer is in, before the answer is committed, so
   lost_i stays under the concurrency only while a commit takes less time than a call; on a
   machine loaded 17-25 one kill lost 30 answers at concurrency 16);
5. `PRAGMA integrity_check` is ok.

    .venv/bin/python bench/crash.py --kills 50

The last line printed is one JSON object with the figures. tests/e2e/test_crash.py runs the
same campaign with 10 kills.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TASKS = 2000
DEFAULT_KILLS = 50
DEFAULT_CONCURRENCY = 16
DEFAULT_LATENCY = "50ms"
SETTLE_QUIET_S = 0.05  # the server idle this long (twice in a row) after a kill: settled
KILL_WINDOW_S = 0.5  # at most this long after the segment's first new result is committed


@dataclass
class Campaign:
    run_id: str = ""
    kills: int = 0
    checkpoints: list[tuple[dict[str, int], set[str]]] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    wall_s: float = 0.0


@contextlib.contextmanager
def sim_server(work: Path, latency: str, env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout",
            "sim-server",
            "--port",
            "0",
            "--latency",
            latency,
            "--stats-file",
            str(work / "stats.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if m is None:
        proc.kill()
        raise RuntimeError(f"the sim-server did not start: {line!r} {proc.communicate()}")
    try:
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=30) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def settled_stats(url: str, within: float = 120.0) -> dict[str, int]:
    """The server's answers by request hash once its counts are final: no request in
    flight, and none arriving, in two looks `SETTLE_QUIET_S` apart (a killed client's
    calls run on in the server until they end; a request it had sent may still be read
    from the socket)."""
    give_up = time.monotonic() + within
    last: dict[str, Any] | None = None
    while time.monotonic() < give_up:
        now = server_stats(url)
        if now["in_flight"] == 0:
            if last is not None and last["requests_total"] == now["requests_total"]:
                by_hash: dict[str, int] = now["by_request_hash"]
                return by_hash
            last = now
        else:
            last = None
        time.sleep(SETTLE_QUIET_S)
    raise AssertionError(f"the sim-server did not settle within {within:g} s")


def wait_for_progress(
    proc: subprocess.Popen[str], db_path: Path, run_id: str, had: int, within: float = 60.0
) -> None:
    """Until the store holds more than `had` results (or the process has ended)."""
    give_up = time.monotonic() + within
    while proc.poll() is None and time.monotonic() < give_up:
        if db_path.exists() and len(committed(db_path, run_id)) > had:
            return
        time.sleep(0.02)


def committed(db_path: Path, run_id: str) -> set[str]:
    """Request hashes of the done results committed in the store (hex)."""
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        rows = db.execute(
            "SELECT hex(request_hash) FROM results JOIN runs USING (rid) "
            "WHERE id = ? AND state = 'done' AND cached = 0",
            (run_id,),
        ).fetchall()
    return {str(r[0]).lower() for r in rows}


def campaign(
    work: Path,
    *,
    tasks: int = DEFAULT_TASKS,
    kills: int = DEFAULT_KILLS,
    concurrency: int = DEFAULT_CONCURRENCY,
    latency: str = DEFAULT_LATENCY,
    seed: int = 0,
    kill_window_s: float | None = None,
    say: Any = lambda s: None,
) -> tuple[Campaign, dict[str, Any]]:
    """Run the campaign in `work`; returns it and the final checks' figures (see the module
    docstring). Raises AssertionError when a check fails."""
    rng = random.Random(seed)
    window = kill_window_s if kill_window_s is not None else min(KILL_WINDOW_S, 4.0 / kills)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(work / "home")
    src = work / "in.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"crash test question {i}"}) + "\n"
            for i in range(tasks)
        ),
        encoding="utf-8",
    )
    out = work / "out.jsonl"
    db_path = work / "home" / "fanout.db"
    c = Campaign()
    t0 = time.perf_counter()
    with sim_server(work, latency, env) as url:
        common = ["--no-progress", "--json", "--concurrency", str(concurrency)]
        first = [str(src), "-o", str(out), "--provider", "openai", "--base-url", url + "/v1"]
        first += ["--no-cache"]
        prev: dict[str, int] = {}
        prev_c: set[str] = set()
        while c.kills < kills:
            args = ["batch", *first] if not c.run_id else ["resume", c.run_id, "--no-cache"]
            proc = subprocess.Popen(
                [sys.executable, "-m", "fanout", *args, *common],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=env,
            )
            assert proc.stderr is not None
            line = proc.stderr.readline()
            if not line.startswith("run r-"):
                proc.kill()
                raise AssertionError(f"unexpected first line {line!r}: {proc.communicate()}")
            c.run_id = c.run_id or line.split()[1]
            wait_for_progress(proc, db_path, c.run_id, len(prev_c))
            time.sleep(rng.uniform(0.0, window))
            if proc.poll() is not None:  # it finished before the kill
                proc.communicate()
                break
            proc.kill()
            proc.communicate()
            c.kills += 1
            stats = settled_stats(url)
            done = committed(db_path, c.run_id)
            segment = sum(stats.values()) - sum(prev.values())
            c.lost.append(segment - len(done - prev_c))
            c.checkpoints.append((stats, done))
            prev, prev_c = stats, done
            say(f"kill {c.kills}: {len(done)} committed, {c.lost[-1]} answers lost")
        final = subprocess.run(
            [sys.executable, "-m", "fanout", "resume", c.run_id, "--no-cache", *common],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            timeout=600,
        )
        assert final.returncode == 0, final.stderr
        final_stats = settled_stats(url)
    c.wall_s = time.perf_counter() - t0
    return c, check(c, final_stats, db_path, out, tasks, concurrency)


def check(
    c: Campaign,
    final: dict[str, int],
    db_path: Path,
    out: Path,
    tasks: int,
    concurrency: int,
) -> dict[str, Any]:
    # 1. one result per task, one output line per task
    with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
        states = dict(
            db.execute(
                "SELECT state, count(*) FROM results JOIN runs USING (rid) WHERE id = ? "
                "GROUP BY state",
                (c.run_id,),
            ).fetchall()
        )
    assert states == {"done": tasks}, states
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    ids = [r["custom_id"] for r in lines]
    assert len(lines) == tasks, len(lines)
    assert sorted(ids) == sorted(f"q{i}" for i in range(tasks)), "one line per task"
    assert all(r["error"] is None for r in lines)
    done = committed(db_path, c.run_id)
    assert done <= set(final), "every committed request hash was answered by the server"
    # 2. nothing committed was answered again
    resent = 0
    for stats, committed_then in c.checkpoints:
        for h in committed_then:
            if final[h] != stats[h]:
                resent += 1
    assert resent == 0, f"{resent} committed requests were answered again"
    # 3. every extra answer is one a kill lost
    unexplained = 0
    for h, total in final.items():
        before: dict[str, int] = {}
        lost_h = 0
        for stats, committed_then in c.checkpoints:
            d = stats.get(h, 0) - before.get(h, 0)
            assert d <= 1, (h, d)
            lost_h += d == 1 and h not in committed_then
            before = stats
        assert final[h] - before.get(h, 0) <= 1
        unexplained += total != 1 + lost_h
    assert unexplained == 0, f"{unexplained} requests were answered more often than kills explain"
    # 4. the total
    completions = sum(final.values())
    assert completions == tasks + sum(c.lost), (completions, tasks, c.lost)
    # 5. the file is sound
    assert integrity == "ok", integrity
    return {
        "tasks": tasks,
        "kills": c.kills,
        "concurrency": concurrency,
        "completions": completions,
        "answers_lost": sum(c.lost),
        "lost_max_per_kill": max(c.lost, default=0),
        "lost_per_kill": c.lost,
        "committed_answered_again": resent,
        "integrity": integrity,
        "wall_s": round(c.wall_s, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    ap.add_argument("--kills", type=int, default=DEFAULT_KILLS)
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--latency", default=DEFAULT_LATENCY, help="the sim-server's, e.g. 50ms")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kill-window", type=float, help="seconds (default: min(0.5, 4 / kills))")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fanout-crash-") as tmp:
        _, figures = campaign(
            Path(tmp),
            tasks=args.tasks,
            kills=args.kills,
            concurrency=args.concurrency,
            latency=args.latency,
            seed=args.seed,
            kill_window_s=args.kill_window,
            say=print,
        )
    print(
        f"{figures['kills']} kills, {figures['tasks']} tasks: {figures['completions']} answers "
        f"completed by the server ({figures['answers_lost']} lost to kills, at most "
        f"{figures['lost_max_per_kill']} per kill; concurrency {figures['concurrency']}); "
        f"committed requests answered again: {figures['committed_answered_again']}; "
        f"integrity_check: {figures['integrity']}; {figures['wall_s']} s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
