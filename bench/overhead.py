"""Engine overhead per task on a no-op provider, against three plain-asyncio baselines.

Every variant runs N calls of the same no-op coroutine (it returns a short constant answer
without suspending) at concurrency C and keeps every result:

- `fanout`: `Task` objects built, submitted to an `Engine` with a `CallableProvider` around
  the no-op, `await run.wait()`, then `await run.results()` (as a real run reads them);
- `fanout_store`: the same through the SQLite run store in a file on this machine's disk
  (`Engine(store=SqliteStore(path))`: every task, attempt and result committed, FULL sync),
  the results read back from the file; `store_bytes_per_task` is the file's size after a
  checkpoint, divided by N;
- `fanout_store_cache`: the same with the result cache on (what `fanout batch` runs with:
  every request's cache key looked up, every answer stored in the cache);
- `raw_workers`: an `asyncio.Queue` of the inputs and C worker coroutines, results in a list;
- `gather_sem`: `asyncio.gather` over one coroutine per input, each under a `Semaphore(C)`;
- `aiometer`: `aiometer.run_all([...], max_at_once=C)`.

The timed span covers building the inputs, running, and collecting the results (for fanout:
the whole `async with Engine(...)` block); imports are not timed. Each measurement runs in a
fresh subprocess (this script re-invoked with `--variant`), so one variant's garbage cannot
slow another and the peak RSS (`ru_maxrss`) is that variant's own. The variants are
interleaved over `--repeat` rounds; the figures are the medians (RSS: the largest peak).

    .venv/bin/python bench/overhead.py --tasks 100000 --repeat 3

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from typing import Any

VARIANTS = ("fanout", "fanout_store", "fanout_store_cache", "raw_workers", "gather_sem", "aiometer")
ANSWER = "ok: a short constant answer"
DEFAULT_TASKS = 100_000
DEFAULT_CONCURRENCY = 64
DEFAULT_REPEAT = 3


async def noop(_request: object) -> str:
    """The provider call every variant makes: returns at once, never suspends."""
    return ANSWER


def _inputs(n: int) -> list[str]:
    return [f"item {i}" for i in range(n)]


async def run_fanout(n: int, c: int) -> int:
    from fanout import CallableProvider, Engine, Task

    tasks = [Task(p) for p in _inputs(n)]
    async with Engine(providers=CallableProvider(noop, name="noop"), concurrency=c) as engine:
        run = engine.submit(tasks)
        await run.wait()
        results = await run.results()
    return sum(1 for r in results if r.text == ANSWER)


STORE_DIR: list[str] = []  # where the store variants put their file (set by `child`)


async def _run_fanout_store(n: int, c: int, cache: bool) -> int:
    from fanout import CallableProvider, Engine, Task
    from fanout.store.sqlite import SqliteStore

    tasks = [Task(p) for p in _inputs(n)]
    store = SqliteStore(os.path.join(STORE_DIR[0], "fanout.db"))
    provider = CallableProvider(noop, name="noop")
    async with Engine(providers=provider, concurrency=c, store=store, cache=cache) as engine:
        run = engine.submit(tasks)
        await run.wait()
        results = await run.results()
    return sum(1 for r in results if r.text == ANSWER)


async def run_fanout_store(n: int, c: int) -> int:
    return await _run_fanout_store(n, c, cache=False)


async def run_fanout_store_cache(n: int, c: int) -> int:
    return await _run_fanout_store(n, c, cache=True)


def store_bytes() -> int:
    """The store file's size once its WAL is checkpointed into it."""
    import contextlib
    import sqlite3

    path = os.path.join(STORE_DIR[0], "fanout.db")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return os.path.getsize(path)


async def run_raw_workers(n: int, c: int) -> int:
    queue: asyncio.Queue[tuple[int, str]] = asyncio.Queue()
    for item in enumerate(_inputs(n)):
        queue.put_nowait(item)
    results: list[str | None] = [None] * n

    async def worker() -> None:
        while True:
            try:
                i, p = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            results[i] = await noop(p)

    await asyncio.gather(*(worker() for _ in range(c)))
    return sum(1 for r in results if r == ANSWER)


async def run_gather_sem(n: int, c: int) -> int:
    sem = asyncio.Semaphore(c)

    async def one(p: str) -> str:
        async with sem:
            return await noop(p)

    results = await asyncio.gather(*(one(p) for p in _inputs(n)))
    return sum(1 for r in results if r == ANSWER)


async def run_aiometer(n: int, c: int) -> int:
    import aiometer

    jobs = [functools.partial(noop, p) for p in _inputs(n)]
    results = await aiometer.run_all(jobs, max_at_once=c)
    return sum(1 for r in results if r == ANSWER)


RUNNERS: dict[str, Callable[[int, int], Coroutine[Any, Any, int]]] = {
    "fanout": run_fanout,
    "fanout_store": run_fanout_store,
    "fanout_store_cache": run_fanout_store_cache,
    "raw_workers": run_raw_workers,
    "gather_sem": run_gather_sem,
    "aiometer": run_aiometer,
}


def peak_rss_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def child(variant: str, n: int, c: int) -> None:
    """One measurement in this (fresh) process; prints its figures as JSON."""
    if variant.startswith("fanout"):  # import outside the timed span
        import fanout
        import fanout.store.sqlite  # noqa: F401
    elif variant == "aiometer":
        import aiometer  # noqa: F401

    async def timed() -> tuple[float, int]:
        t0 = time.perf_counter()
        ok = await RUNNERS[variant](n, c)
        return time.perf_counter() - t0, ok

    with tempfile.TemporaryDirectory(prefix="fanout-overhead-", dir=os.getcwd()) as tmp:
        STORE_DIR.append(tmp)
        wall, ok = asyncio.run(timed())
        if ok != n:
            raise SystemExit(f"{variant}: {ok} of {n} results came back")
        out = {"variant": variant, "wall_s": wall, "us": wall / n * 1e6, "rss_mb": peak_rss_mb()}
        if variant.startswith("fanout_store"):
            out["bytes_per_task"] = store_bytes() / n
    print(json.dumps(out))


def measure(variant: str, n: int, c: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--variant", variant, "--tasks", str(n)]
    cmd += ["--concurrency", str(c)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"variant {variant} failed:\n{proc.stdout}{proc.stderr}")
    data: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=DEFAULT_TASKS, help="tasks per variant")
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds; medians kept")
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    n, c = args.tasks, args.concurrency
    if args.variant:
        child(args.variant, n, c)
        return

    print(
        f"overhead: {n} no-op tasks at concurrency {c}, {args.repeat} round(s); each variant "
        "in its own subprocess; figure = wall / tasks (imports not timed)"
    )
    us: dict[str, list[float]] = {v: [] for v in VARIANTS}
    rss: dict[str, list[float]] = {v: [] for v in VARIANTS}
    size: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for rnd in range(1, args.repeat + 1):
        for v in VARIANTS:
            m = measure(v, n, c)
            us[v].append(m["us"])
            rss[v].append(m["rss_mb"])
            if "bytes_per_task" in m:
                size[v].append(m["bytes_per_task"])
            print(f"  round {rnd}  {v:<18} {m['us']:8.2f} us/task  peak RSS {m['rss_mb']:7.1f} MB")
    med = {v: statistics.median(us[v]) for v in VARIANTS}
    peak = {v: max(rss[v]) for v in VARIANTS}
    print(f"{'variant':<18} {'us/task (median)':>17} {'peak RSS MB':>12}")
    for v in VARIANTS:
        print(f"{v:<18} {med[v]:17.2f} {peak[v]:12.1f}")
    per_task = {v: statistics.median(size[v]) for v in VARIANTS if size[v]}
    print(
        f"store file: {per_task['fanout_store']:.0f} bytes/task "
        f"({per_task['fanout_store_cache']:.0f} with the cache)"
    )
    print(
        f"fanout / raw workers: {med['fanout'] / med['raw_workers']:.2f}x; "
        f"fanout / gather+Semaphore: {med['fanout'] / med['gather_sem']:.2f}x"
    )
    figures = {
        "tasks": n,
        "concurrency": c,
        "repeat": args.repeat,
        "fanout_us": round(med["fanout"], 2),
        "fanout_store_us": round(med["fanout_store"], 2),
        "fanout_store_cache_us": round(med["fanout_store_cache"], 2),
        "store_bytes_per_task": round(per_task["fanout_store"]),
        "store_cache_bytes_per_task": round(per_task["fanout_store_cache"]),
        "raw_workers_us": round(med["raw_workers"], 2),
        "gather_sem_us": round(med["gather_sem"], 2),
        "aiometer_us": round(med["aiometer"], 2),
        "fanout_rss_mb": round(peak["fanout"], 1),
        "fanout_store_rss_mb": round(peak["fanout_store"], 1),
        "gather_sem_rss_mb": round(peak["gather_sem"], 1),
        "raw_workers_rss_mb": round(peak["raw_workers"], 1),
        "aiometer_rss_mb": round(peak["aiometer"], 1),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
