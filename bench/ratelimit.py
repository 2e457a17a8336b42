"""How close the engine runs to a provider's request budget without being rejected.

The in-process simulator enforces a requests-per-minute limit (default 1,200 RPM, GCRA with
bursts of one second of budget) and answers 429 to anything over it. The engine is told the
same budget (`limits={"sim": ProviderLimits(rpm=...)}`) and is given more tasks than it can
serve in the window (`--demand` times the window's budget). After `--seconds` the run is
cancelled. The achieved rate is measured over the steady state, from the end of the
`--warmup` seconds to the end of the window, by counting the attempts that the simulator
served (their `TaskStarted` times, for tasks that ended `done`), so the initial burst does
not flatter the figure. `rejected_429` is the simulator's own count of rejections.

    .venv/bin/python bench/ratelimit.py --seconds 60 --rpm 1200

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math

from fanout import (
    Engine,
    Event,
    ProviderLimits,
    SimConfig,
    SimProvider,
    Task,
    TaskFinished,
    TaskStarted,
    TaskState,
)

DEFAULT_RPM = 1200.0
DEFAULT_SECONDS = 60.0
DEFAULT_WARMUP_S = 10.0
DEFAULT_LATENCY_S = 0.05
DEFAULT_CONCURRENCY = 16
DEFAULT_DEMAND = 2.0


class Recorder:
    """An event listener: when each task's last attempt started, and which ended done."""

    def __init__(self) -> None:
        self.started: dict[int, float] = {}  # id(task) -> start of its latest attempt
        self.served: list[float] = []  # start times of attempts that produced a result
        self.finished: list[float] = []  # times the results became durable

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, TaskStarted):
            self.started[id(ev.task)] = ev.t
        elif isinstance(ev, TaskFinished) and ev.state is TaskState.DONE:
            self.served.append(self.started[id(ev.task)])
            self.finished.append(ev.t)


async def measure(
    rpm: float, seconds: float, warmup: float, latency: float, concurrency: int, demand: float
) -> dict[str, float | int]:
    provider = SimProvider(SimConfig(rpm=rpm, base_latency_s=latency))
    n = math.ceil(rpm / 60.0 * seconds * demand) + concurrency
    tasks = [Task(f"request {i}: summarise the paragraph") for i in range(n)]
    async with Engine(
        providers={"sim": provider},
        concurrency=concurrency,
        limits={"sim": ProviderLimits(rpm=rpm)},
    ) as engine:
        loop = asyncio.get_running_loop()
        run = engine.submit(tasks)
        t0 = loop.time()
        rec = Recorder()
        run.bus.listen(rec)
        await asyncio.sleep(seconds)
        run.cancel("the measuring window closed")
        metrics = await run.wait()
    lo, hi = t0 + warmup, t0 + seconds
    span = hi - lo
    served = sum(1 for t in rec.served if lo <= t < hi)
    finished = sum(1 for t in rec.finished if lo <= t < hi)
    stats = provider.stats()
    return {
        "tasks": n,
        "done": int(metrics["done"]),
        "cancelled": int(metrics["cancelled"]),
        "retries": int(metrics["retries"]),
        "served_in_window": served,
        "achieved_rpm": served / span * 60.0,
        "finished_rpm": finished / span * 60.0,
        "whole_window_rpm": len([t for t in rec.served if t < hi]) / seconds * 60.0,
        "requests_total": int(stats["requests_total"]),
        "rejected_429": int(stats["rejected_429"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpm", type=float, default=DEFAULT_RPM, help="the simulator's limit")
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="measuring window")
    ap.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds not counted")
    ap.add_argument("--latency", type=float, default=DEFAULT_LATENCY_S, help="sim base latency")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--demand", type=float, default=DEFAULT_DEMAND, help="tasks / window budget")
    args = ap.parse_args()
    warmup = args.warmup
    if warmup >= args.seconds:
        warmup = args.seconds / 6.0
        print(f"(warm-up {args.warmup:g} s is not shorter than the window: using {warmup:g} s)")
    print(
        f"ratelimit: simulator limit {args.rpm:g} RPM, engine budget the same, "
        f"{args.seconds:g} s window, steady state after {warmup:g} s, "
        f"demand {args.demand:g}x, concurrency {args.concurrency}"
    )
    m = asyncio.run(
        measure(args.rpm, args.seconds, warmup, args.latency, args.concurrency, args.demand)
    )
    utilisation = m["achieved_rpm"] / args.rpm
    print(
        f"  {m['tasks']} tasks submitted, {m['done']} done, {m['cancelled']} cancelled "
        f"at the end of the window, {m['retries']} retries"
    )
    print(
        f"  steady state: {m['served_in_window']} requests served in {args.seconds - warmup:g} s"
        f" = {m['achieved_rpm']:.1f} RPM ({utilisation:.4f} of the limit); by completion time "
        f"{m['finished_rpm']:.1f} RPM; whole window incl. the initial burst "
        f"{m['whole_window_rpm']:.1f} RPM"
    )
    print(f"  simulator: {m['requests_total']} requests, {m['rejected_429']} rejected with 429")
    figures = {
        "limit_rpm": args.rpm,
        "seconds": args.seconds,
        "warmup_s": warmup,
        "achieved_rpm": round(m["achieved_rpm"], 1),
        "utilisation": round(utilisation, 4),
        "rejected_429": m["rejected_429"],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
