"""What `--concurrency 100000` costs a small batch: the same 25 requests on the simulator
(0 ms latency), run through `fanout.batch` as `fanout batch` runs them (plan, start, finish,
output file written), at concurrency 16 and at 100,000; and, for comparison, a bare
`Engine(concurrency=100000)`, which makes one worker per slot up front, running the same 25
tasks. A batch's run cannot grow, so `launch` gives its engine no more workers than tasks.
Everything in one process, interleaved over `--repeat` rounds; the figures are medians.

    .venv/bin/python bench/big_concurrency.py --repeat 3

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from fanout import Engine, SimConfig, SimProvider, Task
from fanout.batch.run import plan_batch, start_batch
from fanout.launch import EngineChoice, RunOptions

TASKS = 25


def batch_seconds(root: Path, concurrency: int, i: int) -> float:
    src = root / "in.jsonl"
    out = root / f"out-{concurrency}-{i}.jsonl"
    options = RunOptions(choice=EngineChoice(concurrency=concurrency, sim_latency="0"), cache=False)

    async def go() -> None:
        plan = plan_batch(src, out, "input", options)
        run = await start_batch(plan, options, store_path=root / f"runs-{concurrency}-{i}.db")
        done = await run.finish()
        assert done.lines == TASKS

    t0 = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t0


def engine_seconds(concurrency: int) -> float:
    async def go() -> None:
        sim = SimProvider(SimConfig(base_latency_s=0.0, jitter=0.0))
        async with Engine(concurrency=concurrency, providers={"sim": sim}) as engine:
            run = engine.submit([Task(f"问题 {i}") for i in range(TASKS)])
            await run.wait()

    t0 = time.perf_counter()
    asyncio.run(go())
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    figures: dict[str, list[float]] = {"batch_16": [], "batch_100000": [], "engine_100000": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        os.environ["FANOUT_HOME"] = str(root / "home")
        lines = (json.dumps({"id": f"q{i}", "prompt": f"问题 {i}"}) for i in range(TASKS))
        (root / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        for i in range(args.repeat):
            figures["batch_16"].append(batch_seconds(root, 16, i))
            figures["batch_100000"].append(batch_seconds(root, 100_000, i))
            figures["engine_100000"].append(engine_seconds(100_000))
    med = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    for k, v in med.items():
        print(f"{k:<15} {v * 1000:8.0f} ms")
    med["batch_100000_over_16"] = round(med["batch_100000"] / med["batch_16"], 2)
    med["engine_100000_over_batch_100000"] = round(med["engine_100000"] / med["batch_100000"], 1)
    print(json.dumps(med))


if __name__ == "__main__":
    main()
