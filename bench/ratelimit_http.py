"""How close to a provider's request budget the engine runs over real HTTP, with and without
the budget configured on our side.

A sim-server runs in its own process and enforces `--rpm` (default 1,200 requests/min) per API
key with GCRA (bursts of at most one second of budget), answering 429 with `retry-after`
past it; every answer takes `--latency` (default 50 ms, ±10 % jitter). The engine calls it
through `OpenAIProvider` (the official `openai` SDK on its aiohttp transport) at concurrency
`--concurrency` (default 16) with more tasks than the window can serve (`--demand` times the
window's budget), and the run is cancelled after `--seconds` (default 60). Two runs, each
with its own API key (so each starts with a full server-side budget):

- `configured`: `limits={"openai": ProviderLimits(rpm=RPM)}`: the engine paces itself;
- `adaptive`: no limit on our side, only adaptive concurrency and the server's Retry-After.

Rates are the server's own counts (`GET /stats`, polled every second), over the steady state:
from the end of `--warmup` (default 10 s) to the end of the window. `achieved_rpm` is
completions per minute, `rejected_429_share` is the 429s among all requests the server
received in that span. The retry policy is the engine's default (what `fanout batch` uses)
unless `--attempts` is given.

    .venv/bin/python bench/ratelimit_http.py --seconds 60 --rpm 1200

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from itertools import pairwise
from typing import Any

import aiohttp

from fanout import Engine, Event, LimiterChanged, ProviderLimits, RetryPolicy, Task, TaskRetrying
from fanout.providers.openai import OpenAIProvider

DEFAULT_RPM = 1200.0
DEFAULT_SECONDS = 60.0
DEFAULT_WARMUP_S = 10.0
DEFAULT_LATENCY_S = 0.05
DEFAULT_CONCURRENCY = 16
DEFAULT_DEMAND = 2.0
MODEL = "sim-1"


@contextlib.contextmanager
def sim_server(rpm: float, latency: float, extra: list[str] | None = None) -> Iterator[str]:
    """A sim-server process on a free loopback port; yields its base URL. `extra`: more of
    its flags (the limit's shape, no rate headers)."""
    cmd = [sys.executable, "-m", "fanout.sim_server", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--rpm", f"{rpm:g}", "--latency", f"{latency * 1000:g}ms", *(extra or [])]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            if m is None:
                raise SystemExit(f"the sim-server did not start: {line!r}")
            yield m[0]
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


class Counter:
    """Engine-side counts from the run's events."""

    def __init__(self) -> None:
        self.pauses = 0
        self.retries: dict[str, int] = {}

    def __call__(self, ev: Event) -> None:
        if isinstance(ev, LimiterChanged):
            self.pauses += 1
        elif isinstance(ev, TaskRetrying):
            self.retries[ev.error.kind] = self.retries.get(ev.error.kind, 0) + 1


async def measure(
    url: str,
    key: str,
    *,
    rpm: float,
    configured: bool,
    seconds: float,
    warmup: float,
    concurrency: int,
    demand: float,
    attempts: int | None,
) -> dict[str, Any]:
    provider = OpenAIProvider(api_key=key, base_url=url + "/v1", pool=concurrency)
    limits = {"openai": ProviderLimits(rpm=rpm)} if configured else {}
    retry = RetryPolicy(attempts=attempts) if attempts else None
    n = math.ceil(rpm / 60.0 * seconds * demand) + concurrency
    tasks = [Task(f"request {i}: summarise the paragraph") for i in range(n)]
    samples: list[tuple[float, dict[str, Any]]] = []
    counter = Counter()
    async with (
        aiohttp.ClientSession() as http,
        Engine(
            providers={"openai": provider},
            model=MODEL,
            concurrency=concurrency,
            limits=limits,
            retry=retry,
        ) as engine,
    ):

        async def stats() -> dict[str, Any]:
            async with http.get(url + "/stats") as r:
                data: dict[str, Any] = await r.json()
                return data

        loop = asyncio.get_running_loop()
        async with http.post(url + "/stats/reset") as r:
            r.raise_for_status()
        t0 = loop.time()
        run = engine.submit(tasks)
        run.bus.listen(counter)
        for k in range(1, math.ceil(seconds) + 1):  # one sample a second, on the second
            await asyncio.sleep(max(0.0, t0 + min(k, seconds) - loop.time()))
            samples.append((loop.time() - t0, await stats()))
        run.cancel("the measuring window closed")
        metrics = await run.wait()
        meter = engine.provider_meters[f"openai:{MODEL}"]
        decreases, limit = meter.decreases, meter.limit
    # the steady state: from the sample at the end of the warm-up to the last one
    t_lo, lo = min(samples, key=lambda s: abs(s[0] - warmup))
    t_hi, hi = samples[-1]
    span = t_hi - t_lo
    completed = hi["completed_total"] - lo["completed_total"]
    requests = hi["requests_total"] - lo["requests_total"]
    rejected = hi["rejected_429"] - lo["rejected_429"]
    per_s = [b["completed_total"] - a["completed_total"] for (_, a), (_, b) in pairwise(samples)]
    return {
        "tasks": n,
        "done": int(metrics["done"]),
        "failed": int(metrics["failed"]),
        "cancelled": int(metrics["cancelled"]),
        "retries": dict(sorted(counter.retries.items())),
        "pauses": counter.pauses,
        "aimd_decreases": decreases,
        "final_limit": limit,
        "span_s": span,
        "completed": completed,
        "requests": requests,
        "rejected": rejected,
        "achieved_rpm": completed / span * 60.0,
        "rejected_share": rejected / requests if requests else 0.0,
        "whole_requests": hi["requests_total"],
        "whole_rejected": hi["rejected_429"],
        "per_second": per_s,
    }


def report(name: str, m: dict[str, Any], rpm: float) -> None:
    print(
        f"  {name}: {m['tasks']} tasks, {m['done']} done, {m['failed']} failed, "
        f"{m['cancelled']} cancelled at the end of the window; retries {m['retries']}; "
        f"{m['pauses']} Retry-After pauses, {m['aimd_decreases']} AIMD decreases "
        f"(concurrency limit at the end {m['final_limit']:.1f})"
    )
    print(
        f"    steady state ({m['span_s']:.1f} s): {m['completed']} answers = "
        f"{m['achieved_rpm']:.1f} RPM ({m['achieved_rpm'] / rpm:.4f} of the limit); "
        f"{m['rejected']} of {m['requests']} requests rejected with 429 "
        f"({m['rejected_share']:.4f}); whole window: {m['whole_rejected']} of "
        f"{m['whole_requests']} rejected"
    )
    print(f"    answers per second: {' '.join(str(x) for x in m['per_second'])}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rpm", type=float, default=DEFAULT_RPM, help="the server's limit")
    ap.add_argument("--seconds", type=float, default=DEFAULT_SECONDS, help="each run's window")
    ap.add_argument("--warmup", type=float, default=DEFAULT_WARMUP_S, help="seconds not counted")
    ap.add_argument("--latency", type=float, default=DEFAULT_LATENCY_S, help="server seconds")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--demand", type=float, default=DEFAULT_DEMAND, help="tasks / window budget")
    ap.add_argument("--attempts", type=int, help="attempts per task (default: the engine's)")
    ap.add_argument("--only", choices=("configured", "adaptive"), help="run one of the two")
    ap.add_argument("--shape", default="gcra", help="the server's limit shape (gcra, fixed, ...)")
    ap.add_argument("--window", type=float, default=60.0, help="its window, seconds")
    ap.add_argument("--no-rate-headers", action="store_true", help="the server sends none")
    args = ap.parse_args()
    extra = ["--limit-shape", args.shape, "--limit-window", f"{args.window:g}"]
    extra += ["--no-rate-headers"] if args.no_rate_headers else []
    warmup = args.warmup
    if warmup >= args.seconds:
        warmup = args.seconds / 6.0
        print(f"(warm-up {args.warmup:g} s is not shorter than the window: using {warmup:g} s)")
    print(
        f"ratelimit_http: sim-server limit {args.rpm:g} RPM per key (its own process, "
        f"{args.latency * 1000:g} ms answers), {args.seconds:g} s per run, steady state after "
        f"{warmup:g} s, demand {args.demand:g}x, concurrency {args.concurrency}, shape "
        f"{args.shape} ({args.window:g} s), rate headers {'off' if args.no_rate_headers else 'on'}"
    )
    results: dict[str, dict[str, Any]] = {}
    with sim_server(args.rpm, args.latency, extra) as url:
        for name in ("configured", "adaptive"):
            if args.only not in (None, name):
                continue
            results[name] = asyncio.run(
                measure(
                    url,
                    f"sk-bench-{name}",
                    rpm=args.rpm,
                    configured=name == "configured",
                    seconds=args.seconds,
                    warmup=warmup,
                    concurrency=args.concurrency,
                    demand=args.demand,
                    attempts=args.attempts,
                )
            )
            report(name, results[name], args.rpm)
    figures: dict[str, Any] = {"limit_rpm": args.rpm, "seconds": args.seconds, "warmup_s": warmup}
    figures |= {"shape": args.shape, "rate_headers": not args.no_rate_headers}
    if "configured" in results:
        m = results["configured"]
        figures["achieved_rpm"] = round(m["achieved_rpm"], 1)
        figures["utilisation"] = round(m["achieved_rpm"] / args.rpm, 4)
        figures["rejected_429_share"] = round(m["rejected_share"], 4)
    if "adaptive" in results:
        m = results["adaptive"]
        figures["adaptive_achieved_rpm"] = round(m["achieved_rpm"], 1)
        figures["adaptive_utilisation"] = round(m["achieved_rpm"] / args.rpm, 4)
        figures["adaptive_rejected_429_share"] = round(m["rejected_share"], 4)
        figures["adaptive_failed"] = m["failed"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
