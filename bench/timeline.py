"""The timeline pictures of a big run: sizes and times of `--html`, `--png` and `--trace`.

One real run of `--tasks` calls (default 100,000) through an `Engine` with a SQLite store in
a temporary folder, on the in-process simulator (`--latency` per call, default 5 ms, 2 %
500s so there are retries) at `--concurrency` (default 256). Then, each timed
on its own: reading the timeline from the store (`load_timeline`), writing the HTML page,
the PNG and the trace, and loading the page in headless Chromium (`--dump-dom` after the
script ran; the process's whole wall time, start-up included) with the count of bars the
page reports it drew.

    .venv/bin/python bench/timeline.py --tasks 100000

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import tempfile
import time
from pathlib import Path

from fanout import Engine, RetryPolicy, SimConfig, SimProvider, SqliteStore, Task
from fanout.report.html import write_html
from fanout.report.png import write_png
from fanout.report.timeline import load_timeline
from fanout.report.trace import render_trace
from fanout.store.sqlite import connect

CHROMIUM = "/usr/bin/chromium"


async def big_run(path: Path, tasks: int, concurrency: int, latency: float) -> str:
    sim = SimConfig(
        base_latency_s=latency,
        jitter=0.5,
        per_token_s=0.0,
        # 500s only: 429s would have the engine learn a request rate and pace the run
        faults={"500": 0.02},
    )
    lanes = {"批处理": concurrency // 2, "fast": concurrency // 2}
    async with Engine(
        providers=SimProvider(sim),
        store=SqliteStore(path),
        concurrency=concurrency,
        lanes=lanes,
        retry=RetryPolicy(backoff_base_s=0.01, backoff_cap_s=0.05, budget=tasks),
    ) as engine:
        run = engine.submit(
            [
                Task(f"第{i}段", key=f"文档-{i:06d}", lane="批处理" if i % 2 else "fast")
                for i in range(tasks)
            ]
        )
        await run.wait()
        return run.id


def chromium_load(page: Path, profile: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",
            "--window-size=1400,900", "--virtual-time-budget=10000", "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    m = re.search(r'data-drawn-bars="(\d+)"', proc.stdout)
    return wall, int(m.group(1)) if m else -1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--latency", type=float, default=0.005, help="seconds per call")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        run_id = asyncio.run(big_run(d / "runs.db", args.tasks, args.concurrency, args.latency))
        run_s = time.perf_counter() - t0
        db = connect(d / "runs.db")
        t0 = time.perf_counter()
        tl = load_timeline(db, run_id)
        load_s = time.perf_counter() - t0
        db.close()
        assert tl is not None
        t0 = time.perf_counter()
        html_bytes = write_html(tl, d / "run.html")
        html_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_png(tl, d / "run.png")
        png_s = time.perf_counter() - t0
        png_bytes = (d / "run.png").stat().st_size
        t0 = time.perf_counter()
        trace = render_trace(tl).encode("utf-8")
        (d / "run.json").write_bytes(trace)
        trace_s = time.perf_counter() - t0
        chromium_s, drawn = chromium_load(d / "run.html", d / "profile")
    figures = {
        "tasks": args.tasks,
        "attempts": len(tl.bars),
        "slots": tl.slots,
        "run_s": round(run_s, 2),
        "load_s": round(load_s, 2),
        "html_s": round(html_s, 2),
        "html_mb": round(html_bytes / 1e6, 2),
        "png_s": round(png_s, 2),
        "png_kb": round(png_bytes / 1e3, 1),
        "trace_s": round(trace_s, 2),
        "trace_mb": round(len(trace) / 1e6, 2),
        "chromium_s": round(chromium_s, 2),
        "drawn_bars": drawn,
    }
    print(
        f"{figures['tasks']:,} tasks, {figures['attempts']:,} attempts on {tl.slots} slots "
        f"(run {run_s:.1f} s): timeline read in {load_s:.2f} s; HTML {figures['html_mb']} MB "
        f"in {html_s:.2f} s; PNG in {png_s:.2f} s; trace {figures['trace_mb']} MB in "
        f"{trace_s:.2f} s; Chromium loaded the page and drew {drawn:,} bars in {chromium_s:.1f} s"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
