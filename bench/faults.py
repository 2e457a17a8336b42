"""Random faults against a clean run: sporadic 429s and 500s must not collapse throughput.

N tasks (default 2,000) of `--latency` seconds (default 0.3) at concurrency C (default 32)
run through an `Engine` on the in-process simulator twice: once without faults, once with
`--faults` (default 10 % 429s with a 1 s Retry-After and 5 % 500s), `--attempts` per task
(default 6). The 429s here are noise, not a rate the client exceeded: the simulator has no
rate limit. Reported: both walls, their ratio (target <= 1.6), how many tasks ended done,
the lowest learned pace and concurrency limit the provider meter reached.

    .venv/bin/python bench/faults.py --tasks 2000 --concurrency 32 --latency 0.3 [--http]

With `--http` both runs go over real HTTP through the OpenAI SDK (`OpenAIProvider`) to a
sim-server process injecting the same faults (its 429s carry the same Retry-After, and a
budget far above the run's, so every 429 is noise, as with the in-process simulator).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any

from fanout import Engine, RetryPolicy, SimConfig, SimProvider, Task
from fanout.engine.events import Event, TaskFinished
from fanout.providers.base import Provider
from fanout.providers.openai import OpenAIProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratelimit_http import sim_server

DEFAULT_TASKS = 2000
DEFAULT_CONCURRENCY = 32
DEFAULT_LATENCY_S = 0.3
DEFAULT_FAULTS = "429=0.1,500=0.05"
DEFAULT_ATTEMPTS = 6


#: the sim-server's request budget with `--http`: far above any run here, so no 429 is a rate
HTTP_RPM = 1_000_000.0


async def one_run(
    n: int, c: int, latency: float, faults: dict[str, float], attempts: int, url: str | None
) -> dict[str, Any]:
    provider: Provider
    if url is None:
        cfg = SimConfig(base_latency_s=latency, jitter=0.0, per_token_s=0.0, faults=faults, seed=7)
        provider = SimProvider(cfg)
    else:
        provider = OpenAIProvider(api_key="sk-bench-faults", base_url=url + "/v1", pool=c)
    low = {"pace": float("inf"), "limit": float("inf")}
    tasks = [Task(f"question {i}: explain the idea in one paragraph") for i in range(n)]
    t0 = time.perf_counter()
    async with Engine(
        providers={provider.name: provider},
        concurrency=c,
        retry=RetryPolicy(attempts=attempts),
        seed=7,
    ) as engine:
        run = engine.submit(tasks)

        def watch(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                for m in engine.provider_meters.values():
                    low["limit"] = min(low["limit"], m.limit)
                    if m.pace_rate is not None:
                        low["pace"] = min(low["pace"], m.pace_rate)

        run.listen(watch)
        metrics = await run.wait()
    wall = time.perf_counter() - t0
    return {
        "wall_s": round(wall, 3),
        "done": metrics["done"],
        "failed": metrics["failed"],
        "retries": metrics["retries"],
        "lowest_limit": round(low["limit"], 2),
        "lowest_pace": None if low["pace"] == float("inf") else round(low["pace"], 2),
    }


def main() -> None:
    from fanout.providers.sim import parse_faults

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=DEFAULT_TASKS)
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--latency", type=float, default=DEFAULT_LATENCY_S, help="seconds per call")
    ap.add_argument("--faults", default=DEFAULT_FAULTS)
    ap.add_argument("--attempts", type=int, default=DEFAULT_ATTEMPTS)
    ap.add_argument("--http", action="store_true", help="through the OpenAI SDK to a sim-server")
    args = ap.parse_args()
    faults = parse_faults(args.faults)
    walls = {}
    for name, spec in (("clean", ""), ("faulty", args.faults)):
        with contextlib.ExitStack() as stack:
            url = None
            if args.http:
                extra = ["--faults", spec] if spec else []
                url = stack.enter_context(sim_server(HTTP_RPM, args.latency, extra))
            fs = faults if spec else {}
            walls[name] = asyncio.run(
                one_run(args.tasks, args.concurrency, args.latency, fs, args.attempts, url)
            )
        print(f"{name:7} {walls[name]}")
    clean, faulty = walls["clean"], walls["faulty"]
    out = {
        "http": args.http,
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "latency_s": args.latency,
        "faults": args.faults,
        "clean_wall_s": clean["wall_s"],
        "faulty_wall_s": faulty["wall_s"],
        "ratio": round(faulty["wall_s"] / clean["wall_s"], 3),
        "faulty_done": faulty["done"],
        "faulty_failed": faulty["failed"],
        "faulty_retries": faulty["retries"],
        "lowest_limit": faulty["lowest_limit"],
        "lowest_pace": faulty["lowest_pace"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
