"""The service's cost: a batch over HTTP while dashboards stream its events, against the
same batch from the CLI; and the server's memory after 100,000 finished tasks.

1. Wall time. N tasks (default 10,000; the built-in simulator, `--sim-latency` fixed,
   `--no-cache`, concurrency C) run `--repeat` times each way, interleaved:
   - the CLI: `fanout batch FILE -o OUT --json` in its own process;
   - the service: the same file uploaded to a `fanout serve` (same flags), while `--clients`
     (default 3) SSE clients stream the run's events from its start to `end` (nothing else
     asks the server anything meanwhile: the streams' `counts` are the progress).
   Both walls are the run's own wall time as the store records it (its segments: from the
   run's start to its end, startup of the process excluded), so the ratio compares the
   runs, not Python's start-up. The figure is service / CLI of the medians.
2. Memory. One upload of `--big` tasks (default 100,000) to a fresh server; once it is
   completed, the server's resident memory (VmRSS) and its peak (VmHWM) from /proc. With
   `--big-cli`, the same batch from `fanout batch` too: its process's peak (as the store
   records it), for scale.

    .venv/bin/python bench/serve.py --tasks 10000 --big 100000

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

TOKEN = "bench-token-0123456789abcdef"


def jsonl(n: int, tag: str) -> bytes:
    return "".join(
        json.dumps({"id": f"{tag}-{i}", "prompt": f"第{i}个问题：用一段话解释这个概念"}) + "\n"
        for i in range(n)
    ).encode()


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(home)
    return env


class Serve:
    def __init__(self, home: Path, root: Path, flags: list[str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--port", "0", "--token", TOKEN,
             "--root", str(root), "--max-upload", "1000MB", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env_for(home),
        )  # fmt: skip
        assert self.proc.stdout is not None
        url = ""
        while not url:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("fanout serve did not start")
            m = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = m.group(1) if m else ""
        self.url = url
        self.client = httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=600
        )

    def submit(self, data: bytes) -> str:
        r = self.client.post("/api/runs", files={"input": ("jobs.jsonl", data)})
        r.raise_for_status()
        return str(r.json()["id"])

    def wait(self, run_id: str) -> dict[str, Any]:
        while True:
            d: dict[str, Any] = self.client.get(f"/api/runs/{run_id}").json()
            if d["status"] not in ("in_progress", "finalizing", "validating"):
                return d
            time.sleep(0.25)

    def memory_mb(self) -> tuple[float, float]:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        hwm = int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        return rss / 1024, hwm / 1024

    def stop(self) -> None:
        self.client.close()
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=120)


def stream_events(url: str, run_id: str, counts: list[int]) -> None:
    """One dashboard: the run's event stream from its start to `end`."""
    n = 0
    with (
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as c,
        c.stream("GET", f"/api/runs/{run_id}/events", timeout=600) as r,
    ):
        for line in r.iter_lines():
            if line == "event: task":
                n += 1
            elif line == "event: end":
                break
    counts.append(n)


def store_wall(home: Path, run_id: str) -> float:
    import sqlite3

    with sqlite3.connect(home / "fanout.db") as db:
        rows = db.execute(
            "SELECT wall_s FROM segments JOIN runs USING (rid) WHERE id = ?", (run_id,)
        ).fetchall()
    return float(sum(r[0] or 0.0 for r in rows))


def peak_of(home: Path, run_id: str) -> float:
    """The peak RSS the store recorded for the run's process (its segments)."""
    import sqlite3

    with sqlite3.connect(home / "fanout.db") as db:
        rows = db.execute(
            "SELECT peak_rss_mb FROM segments JOIN runs USING (rid) WHERE id = ?", (run_id,)
        ).fetchall()
    return round(max(float(r[0] or 0.0) for r in rows), 1)


def cli_run(home: Path, src: Path, out: Path, flags: list[str]) -> tuple[str, float]:
    p = subprocess.run(
        [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(out), "--json",
         "--no-progress", *flags],
        capture_output=True, text=True, env=env_for(home), check=True,
    )  # fmt: skip
    run_id = re.search(r"run (r-[0-9a-f]+)", p.stderr).group(1)  # type: ignore[union-attr]
    return run_id, store_wall(home, run_id)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--big", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", default="50ms")
    ap.add_argument("--clients", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-cli", action="store_true", help="also run the big batch from the CLI")
    ap.add_argument(
        "--big-runs", type=int, default=1,
        help="submit the big batch this many times to one server: does its memory grow?",
    )  # fmt: skip
    args = ap.parse_args()
    flags = ["--concurrency", str(args.concurrency), "--sim-latency", args.latency, "--no-cache"]
    fig: dict[str, Any] = {"tasks": args.tasks, "concurrency": args.concurrency,
                           "latency": args.latency, "clients": args.clients}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home, root = work / "home", work / "root"
        root.mkdir()
        src = root / "jobs.jsonl"
        data = jsonl(args.tasks, "q")
        src.write_bytes(data)
        server = Serve(home, root, flags)
        cli_walls: list[float] = []
        serve_walls: list[float] = []
        events: list[list[int]] = []
        try:
            for i in range(args.repeat):
                _, w = cli_run(home, src, work / f"out-{i}.jsonl", flags)
                cli_walls.append(w)
                run_id = server.submit(data)
                counts: list[int] = []
                clients = [
                    threading.Thread(target=stream_events, args=(server.url, run_id, counts))
                    for _ in range(args.clients)
                ]
                for t in clients:
                    t.start()
                for t in clients:  # the streams end with the run (its `end` event)
                    t.join()
                d = server.wait(run_id)
                assert d["request_counts"]["completed"] == args.tasks, d["request_counts"]
                serve_walls.append(store_wall(home, run_id))
                events.append(counts)
                print(f"round {i + 1}: cli {cli_walls[-1]:.2f} s, serve {serve_walls[-1]:.2f} s,"
                      f" events per client {counts}", flush=True)  # fmt: skip
        finally:
            server.stop()
        if not args.repeat:  # the memory part alone
            cli_walls = serve_walls = [1.0]
        fig["cli_wall_s"] = [round(w, 3) for w in cli_walls]
        fig["serve_wall_s"] = [round(w, 3) for w in serve_walls]
        fig["ratio_of_medians"] = round(
            statistics.median(serve_walls) / statistics.median(cli_walls), 4
        )
        fig["events_per_client"] = events
        if args.big:
            big_home = work / "home-big"
            server = Serve(big_home, root, ["--concurrency", "256", "--sim-latency", "5ms",
                                            "--no-cache"])  # fmt: skip
            try:
                rss0, _ = server.memory_mb()
                fig["server_rss_mb_idle"] = round(rss0, 1)
                fig["big_tasks"] = args.big
                walls, completed, after, peaks = [], [], [], []
                for _ in range(max(1, args.big_runs)):
                    t0 = time.perf_counter()
                    run_id = server.submit(jsonl(args.big, "big"))
                    d = server.wait(run_id)
                    walls.append(round(time.perf_counter() - t0, 2))
                    completed.append(d["request_counts"]["completed"])
                    rss, hwm = server.memory_mb()
                    after.append(round(rss, 1))
                    peaks.append(round(hwm, 1))
                    print(f"big run {len(walls)}: {walls[-1]} s, RSS after {after[-1]} MB,"
                          f" peak so far {peaks[-1]} MB", flush=True)  # fmt: skip
                fig["big_completed"] = completed[0] if len(completed) == 1 else completed
                fig["big_wall_s"] = walls[0] if len(walls) == 1 else walls
                fig["server_rss_mb_after_big"] = after[0] if len(after) == 1 else after
                fig["server_peak_rss_mb"] = peaks[-1]
            finally:
                server.stop()
            if args.big_cli:  # the same batch from the CLI: its process's peak, for scale
                big_src = root / "big.jsonl"
                big_src.write_bytes(jsonl(args.big, "big"))
                t0 = time.perf_counter()
                run_id, _ = cli_run(big_home, big_src, work / "big-out.jsonl", ["--concurrency",
                                    "256", "--sim-latency", "5ms", "--no-cache"])  # fmt: skip
                fig["big_cli_wall_s"] = round(time.perf_counter() - t0, 2)
                fig["big_cli_peak_rss_mb"] = peak_of(big_home, run_id)
    fig["load_avg"] = os.getloadavg()[0]
    print(json.dumps(fig))


if __name__ == "__main__":
    main()
