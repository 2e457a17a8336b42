"""Wall time of many fixed-latency calls through the engine, against a raw worker pool.

N tasks (default 10,000) of a fixed simulated latency (default 50 ms) at concurrency C
(default 64) run through an `Engine` on the in-process simulator
(`SimConfig(base_latency_s=latency, jitter=0.0, per_token_s=0)`: it also derives each answer's
text and usage from the prompt, so its CPU cost is part of the figure). In the same
process, a raw asyncio pool (a queue and C workers, each `await asyncio.sleep(latency)` per
item) runs the same N items. Both timings include preparing the work (the engine's: building
the `Task` objects and submitting them; the pool's: filling its queue) and collecting the
results, as a user would see them. No schedule can beat ceil(N / C) x latency (`ideal_s`).

The two are interleaved over `--repeat` rounds (raw first in odd rounds, engine first in
even ones); the figures are the medians.

    .venv/bin/python bench/wall.py --tasks 10000 --concurrency 64 --latency 0.05

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import time

from fanout import Engine, SimConfig, SimProvider, Task

DEFAULT_TASKS = 10_000
DEFAULT_CONCURRENCY = 64
DEFAULT_LATENCY_S = 0.05
DEFAULT_REPEAT = 3


async def engine_wall(n: int, c: int, latency: float) -> tuple[float, float, float]:
    """Seconds for the whole engine run, and the part of it spent before any call could
    start: building the `Task` objects, and starting the engine plus `submit`."""
    cfg = SimConfig(base_latency_s=latency, jitter=0.0, per_token_s=0.0)
    t0 = time.perf_counter()
    tasks = [Task(f"question {i}: explain the idea in one paragraph") for i in range(n)]
    t1 = time.perf_counter()
    async with Engine(providers={"sim": SimProvider(cfg)}, concurrency=c) as engine:
        run = engine.submit(tasks)
        t2 = time.perf_counter()
        metrics = await run.wait()
        results = await run.results()
    wall = time.perf_counter() - t0
    if metrics["done"] != n or len(results) != n:
        raise SystemExit(f"engine: {metrics['done']} of {n} tasks done ({metrics['status']})")
    return wall, t1 - t0, t2 - t1


async def raw_wall(n: int, c: int, latency: float) -> float:
    t0 = time.perf_counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    results: list[str | None] = [None] * n

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await asyncio.sleep(latency)
            results[i] = "ok"

    await asyncio.gather(*(worker() for _ in range(c)))
    wall = time.perf_counter() - t0
    if results.count("ok") != n:
        raise SystemExit("raw pool: some items were not processed")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--latency", type=float, default=DEFAULT_LATENCY_S, help="seconds per call")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds; medians kept")
    args = ap.parse_args()
    n, c, latency = args.tasks, args.concurrency, args.latency
    ideal = math.ceil(n / c) * latency
    print(f"wall: {n} tasks x {latency * 1000:g} ms at concurrency {c}; ideal {ideal:.3f} s")
    engine_s: list[float] = []
    build_s: list[float] = []
    submit_s: list[float] = []
    raw_s: list[float] = []
    for rnd in range(1, args.repeat + 1):
        order = ("raw", "engine") if rnd % 2 else ("engine", "raw")
        for which in order:
            if which == "raw":
                w = asyncio.run(raw_wall(n, c, latency))
                raw_s.append(w)
            else:
                w, b, sub = asyncio.run(engine_wall(n, c, latency))
                engine_s.append(w)
                build_s.append(b)
                submit_s.append(sub)
            print(f"  round {rnd}  {which:<6} {w:8.3f} s  ({w / ideal:.4f} x ideal)")
    wall = statistics.median(engine_s)
    raw = statistics.median(raw_s)
    build, submit = statistics.median(build_s), statistics.median(submit_s)
    print(
        f"engine {wall:.3f} s = {wall / ideal:.4f} x ideal; raw pool {raw:.3f} s = "
        f"{raw / ideal:.4f} x ideal; engine / raw = {wall / raw:.4f}"
    )
    print(
        f"before the first call: {build * 1000:.1f} ms building the Task objects, "
        f"{submit * 1000:.1f} ms starting the engine and submitting "
        f"({(build + submit) / raw * 100:.2f}% of the raw pool's wall)"
    )
    figures = {
        "tasks": n,
        "concurrency": c,
        "latency_s": latency,
        "repeat": args.repeat,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 4),
        "raw_wall_s": round(raw, 3),
        "raw_ratio": round(raw / ideal, 4),
        "ratio_vs_raw": round(wall / raw, 4),
        "build_s": round(build, 4),
        "submit_s": round(submit, 4),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
