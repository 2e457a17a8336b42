"""The seed notes' "Phase 4 vs Phase 5" comparison: agents one after another, then at once.

The notes (`000_289addc387f01462.txt`, Phase 5 design; `004_2f7243aa1e9931d0.txt`, section
1.2 "Sub-agent performance") give each learning agent a duration range; this benchmark uses
the middle of each range (the notes' scoring-agent, 1-2 s, is raised to 2 s, the issue's
floor):

    clarification-path 9.0 s (8-10)      four-level-explanation 8.0 s (7-9)
    oral-explanation 7.0 s (6-8)         deep-decomposition 4.0 s (3-5)
    comparison-table 3.5 s (3-4)         verification-question-agent 3.5 s (3-4)
    memory-anchor 2.5 s (2-3)            basic-decomposition 2.5 s (2-3)
    scoring-agent 2.0 s (1-2)

The 4-task set is the notes' Phase 4 example (clarification-path, oral-explanation,
memory-anchor, memory-anchor); 8 adds four-level-explanation, comparison-table,
basic-decomposition and deep-decomposition; 16 adds verification-question-agent,
scoring-agent and a second concept's clarification-path, oral-explanation,
four-level-explanation, comparison-table, memory-anchor and deep-decomposition.

Durations are multiplied by `--scale` (default 0.02: 9 s becomes 180 ms) so the whole
comparison takes seconds. Each agent gets its own in-process simulator,
`SimProvider(SimConfig(base_latency_s=duration x scale, jitter=0, per_token_s=0))`,
registered under the provider name `sim-<agent>`: the call really derives text and usage from
the prompt, and lasts the agent's duration. Each set runs through an `Engine` at
concurrency 1 (serial, Phase 4) and at `--concurrency` (default 16, Phase 5); the wall
time of each covers the whole `async with Engine(...)` block. Speedup = serial wall /
parallel wall; ideal = sum of durations / longest duration (no schedule can beat it).
Medians over `--repeat` rounds.

    .venv/bin/python bench/serial_vs_parallel.py --scale 0.02 --repeat 3

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from fanout import Engine, SimConfig, SimProvider, Task

# the notes' agents and their durations: the same data `fanout bench` runs
from fanout.report.bench import AGENT_TASKS, DURATIONS_S

SIZES = (4, 8, 16)
DEFAULT_SCALE = 0.02
DEFAULT_CONCURRENCY = 16
DEFAULT_REPEAT = 3


def make_tasks(n: int) -> list[Task]:
    return [
        Task(
            f"[{agent}] 请为概念「{concept}」生成学习材料。",
            key=f"{agent}/{concept}/{i}",
            agent=agent,
            provider=f"sim-{agent}",
        )
        for i, (agent, concept) in enumerate(AGENT_TASKS[:n])
    ]


async def timed_run(n: int, concurrency: int, scale: float) -> float:
    providers = {
        f"sim-{agent}": SimProvider(
            SimConfig(base_latency_s=d * scale, jitter=0.0, per_token_s=0.0)
        )
        for agent, d in DURATIONS_S.items()
    }
    t0 = time.perf_counter()
    async with Engine(providers=providers, concurrency=concurrency) as engine:
        run = engine.submit(make_tasks(n))
        metrics = await run.wait()
    wall = time.perf_counter() - t0
    if metrics["done"] != n:
        raise SystemExit(f"{n} tasks at concurrency {concurrency}: {metrics['done']} done")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", type=float, default=DEFAULT_SCALE, help="duration multiplier")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="parallel")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds; medians kept")
    args = ap.parse_args()
    if args.concurrency < max(SIZES):
        ap.error(f"--concurrency must be at least {max(SIZES)} (the issue asks for >= 16)")
    scale = args.scale
    print(
        f"serial vs parallel: per-agent durations from the seed notes x {scale:g} "
        f"(9 s -> {9.0 * scale * 1000:g} ms); serial = concurrency 1, parallel = concurrency "
        f"{args.concurrency}; {args.repeat} round(s), medians"
    )
    figures: dict[str, float | int] = {}
    for n in SIZES:
        durations = [DURATIONS_S[agent] for agent, _ in AGENT_TASKS[:n]]
        total, longest = sum(durations), max(durations)
        ideal = total / longest
        serial_s: list[float] = []
        parallel_s: list[float] = []
        for _ in range(args.repeat):
            serial_s.append(asyncio.run(timed_run(n, 1, scale)))
            parallel_s.append(asyncio.run(timed_run(n, args.concurrency, scale)))
        serial, parallel = statistics.median(serial_s), statistics.median(parallel_s)
        speedup = serial / parallel
        print(
            f"  {n:2d} agents: durations sum {total:g} s, longest {longest:g} s (unscaled); "
            f"serial {serial:.3f} s (ideal {total * scale:.3f}), parallel {parallel:.3f} s "
            f"(ideal {longest * scale:.3f}); speedup {speedup:.2f} of ideal {ideal:.2f} "
            f"= {speedup / ideal:.3f}"
        )
        figures[f"speedup_{n}"] = round(speedup, 3)
        figures[f"ideal_{n}"] = round(ideal, 3)
        figures[f"serial_{n}_s"] = round(serial, 4)
        figures[f"parallel_{n}_s"] = round(parallel, 4)
    figures["scale"] = scale
    figures["concurrency"] = args.concurrency
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
