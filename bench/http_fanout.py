"""Client cost per call over real HTTP: `fanout batch`'s code path against a bare aiohttp loop.

A sim-server runs in its own process (`python -m fanout.sim_server --latency
base=50ms,jitter=0`: every answer takes 50 ms). In this process, N calls (default 2,000) at
concurrency C (default 64) are made twice per round, against the same server and with the
same request bodies:

- `fanout`: what `fanout batch jobs.jsonl -o out.jsonl --provider openai --base-url URL`
  does once its flags are read: the JSONL lines become `Task`s (`fanout.batch.parse_lines`),
  an `Engine` with an `OpenAIProvider` (the official `openai` SDK on its aiohttp transport,
  pool sized to C; non-streaming, as `fanout batch` is without an idle timeout) runs them,
  and a `BatchSink` writes the output file (input order, atomic rename);
- `bare`: one `aiohttp.ClientSession` (connector limit C) and an `asyncio.Semaphore(C)`, one
  coroutine per body: POST the JSON body, read the JSON answer, keep the message content.

Each timing covers building the work, every call and collecting the results (the `fanout`
one also writes the output file); imports are done before. The client's CPU time is
`time.process_time()` over the same span (the server's is its own process). After each
variant the server's `/stats` must show exactly N completions, each body answered once, and
both variants must have sent the same N bodies. No schedule beats ceil(N / C) x 50 ms
(`ideal_s`). Variants alternate over `--repeat` rounds (bare first in odd rounds); the
figures are medians. The server's own CPU per call (Linux: /proc) and the load average are
printed too: the client and the server share the machine's cores.

    .venv/bin/python bench/http_fanout.py --calls 2000 --concurrency 64 --repeat 5

With `--user-path` the `fanout` variant is what a user of `fanout batch` gets, not only the
engine: the input is a JSONL file on disk, and the timed span covers `plan_batch` (the
provider built from the flags, the file scanned) and `start_batch` with its defaults: the
SQLite run store (a fresh file in a fresh `FANOUT_HOME` each round, so the cache is cold, as
on a first run) and the answer cache on. Without it the engine runs with its in-memory store
and no cache, as in the first measurements of docs/benchmarks.md section 8.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from fanout import Engine
from fanout.batch import BatchSink, parse_lines
from fanout.batch.run import plan_batch, start_batch
from fanout.launch import EngineChoice, RunOptions
from fanout.providers.openai import OpenAIProvider

DEFAULT_CALLS = 2000
DEFAULT_CONCURRENCY = 64
DEFAULT_LATENCY_S = 0.05
DEFAULT_REPEAT = 5
MODEL = "sim-1"
MAX_TOKENS = 1024  # the engine's default `max_tokens`: the bare loop sends the same
KEY = "sk-bench-not-a-secret"


@contextlib.contextmanager
def sim_server(latency: float) -> Iterator[tuple[str, int]]:
    """A sim-server process on a free loopback port; yields its base URL and pid."""
    cmd = [sys.executable, "-m", "fanout.sim_server", "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--latency", f"base={latency * 1000:g}ms,jitter=0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        try:
            line = proc.stdout.readline()
            m = re.search(r"http://127\.0\.0\.1:\d+", line)
            if m is None:
                raise SystemExit(f"the sim-server did not start: {line!r}")
            yield m[0], proc.pid
        finally:
            proc.terminate()
            proc.communicate(timeout=30)


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; NaN where /proc is missing."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stats(url: str, reset: bool = False) -> dict[str, Any]:
    req = urllib.request.Request(url + ("/stats/reset" if reset else "/stats"), method="GET")
    if reset:
        req.method = "POST"
    with urllib.request.urlopen(req, timeout=30) as r:
        data: dict[str, Any] = json.load(r)
    return data


def prompts(n: int) -> list[str]:
    return [f"question {i}: explain the idea in one paragraph" for i in range(n)]


def jsonl_lines(n: int) -> list[str]:
    return [json.dumps({"id": f"q{i}", "prompt": p}) for i, p in enumerate(prompts(n))]


async def fanout_run(url: str, lines: list[str], c: int, out: Path) -> tuple[float, float]:
    """`fanout batch`'s path; (wall seconds, client CPU seconds)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    batch = parse_lines(lines)
    sink = BatchSink(batch, out, "input")
    provider = OpenAIProvider(api_key=KEY, base_url=url + "/v1", pool=c)
    async with Engine(providers={"openai": provider}, model=MODEL, concurrency=c) as engine:
        run = engine.submit(batch.tasks, kind="batch")
        sink.attach(run)
        metrics = await run.wait()
        written = await sink.finish(run)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if metrics["done"] != len(lines) or written != len(lines):
        raise SystemExit(f"fanout: {metrics['done']} done, {written} lines of {len(lines)}")
    return wall, cpu


async def user_run(url: str, c: int, home: Path, n: int) -> tuple[float, float]:
    """`fanout batch in.jsonl -o out.jsonl --provider openai --base-url URL --concurrency C`
    without the CLI's flag parsing and progress display: planning, the SQLite run store in
    `home` (a fresh one), the cache on; (wall seconds, client CPU seconds)."""
    src, out, store = home / "in.jsonl", home / "out.jsonl", home / "runs.db"
    choice = EngineChoice(provider="openai", base_url=url + "/v1", model=MODEL, concurrency=c)
    options = RunOptions(choice=choice)
    if not options.cache:
        raise SystemExit("--user-path: the cache is expected on by default")
    cpu0, t0 = time.process_time(), time.perf_counter()
    plan = plan_batch(src, out, "input", options)
    started = await start_batch(plan, options, store_path=store)
    done = await started.finish()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if done.summary["done"] != n or done.lines != n:
        raise SystemExit(f"user path: {done.summary['done']} done, {done.lines} lines of {n}")
    return wall, cpu


async def bare_run(url: str, texts: list[str], c: int) -> tuple[float, float]:
    """Semaphore + one session; (wall seconds, client CPU seconds)."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    endpoint = url + "/v1/chat/completions"
    bodies = [
        {"model": MODEL, "messages": [{"role": "user", "content": p}], "max_tokens": MAX_TOKENS}
        for p in texts
    ]
    sem = asyncio.Semaphore(c)
    headers = {"Authorization": f"Bearer {KEY}"}
    connector = aiohttp.TCPConnector(limit=c)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(body: dict[str, Any]) -> str:
            async with sem, session.post(endpoint, json=body) as r:
                r.raise_for_status()
                data = await r.json()
                return str(data["choices"][0]["message"]["content"])

        results = await asyncio.gather(*(one(b) for b in bodies))
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    if sum(1 for r in results if r) != len(texts):
        raise SystemExit("bare: some calls came back empty")
    return wall, cpu


def check_server(url: str, n: int, which: str) -> set[str]:
    """Exactly n completions, every body answered once; returns the bodies' hashes."""
    s = stats(url)
    by_hash: dict[str, int] = s["by_request_hash"]
    if s["completed_total"] != n or len(by_hash) != n or set(by_hash.values()) != {1}:
        raise SystemExit(
            f"{which}: the server saw {s['requests_total']} requests, {s['completed_total']} "
            f"completions of {len(by_hash)} bodies (expected {n}, each once)"
        )
    return set(by_hash)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    ap.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY)
    ap.add_argument("--latency", type=float, default=DEFAULT_LATENCY_S, help="server seconds")
    ap.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="rounds; medians kept")
    ap.add_argument(
        "--user-path",
        action="store_true",
        help="fanout batch's whole path: planning, the SQLite run store, the cache on",
    )
    args = ap.parse_args()
    n, c, latency = args.calls, args.concurrency, args.latency
    ideal = math.ceil(n / c) * latency
    print(
        f"http_fanout: {n} calls at concurrency {c}, sim-server answering in "
        f"{latency * 1000:g} ms (its own process); ideal {ideal:.3f} s; fanout path: "
        + ("user (plan_batch, SQLite store, cache on)" if args.user_path else "engine only")
    )
    lines, texts = jsonl_lines(n), prompts(n)
    walls: dict[str, list[float]] = {"fanout": [], "bare": []}
    cpus: dict[str, list[float]] = {"fanout": [], "bare": []}
    server_cpus: list[float] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan
    os.environ.setdefault("OPENAI_API_KEY", KEY)
    with sim_server(latency) as (url, pid), tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.jsonl"
        homes = iter(range(1_000_000))

        def user(k: int) -> tuple[float, float]:
            """One user-path run of the first k lines in a fresh FANOUT_HOME."""
            home = Path(tmp) / f"home{next(homes)}"
            home.mkdir()
            (home / "in.jsonl").write_text("\n".join(lines[:k]) + "\n", encoding="utf-8")
            os.environ["FANOUT_HOME"] = str(home)
            return asyncio.run(user_run(url, c, home, k))

        # warm both paths once (imports, first connections on the server side), not counted
        stats(url, reset=True)
        if args.user_path:
            user(c)
        else:
            asyncio.run(fanout_run(url, lines[:c], c, out))
        asyncio.run(bare_run(url, texts[:c], c))
        for rnd in range(1, args.repeat + 1):
            order = ("bare", "fanout") if rnd % 2 else ("fanout", "bare")
            for which in order:
                stats(url, reset=True)
                gc.collect()
                server0 = cpu_of(pid)
                if which == "fanout" and args.user_path:
                    wall, cpu = user(n)
                    fanout_hashes = check_server(url, n, which)
                elif which == "fanout":
                    wall, cpu = asyncio.run(fanout_run(url, lines, c, out))
                    fanout_hashes = check_server(url, n, which)
                else:
                    wall, cpu = asyncio.run(bare_run(url, texts, c))
                    bare_hashes = check_server(url, n, which)
                server_cpu = cpu_of(pid) - server0
                server_cpus.append(server_cpu)
                walls[which].append(wall)
                cpus[which].append(cpu)
                print(
                    f"  round {rnd}  {which:<6} {wall:7.3f} s  ({wall / ideal:.3f} x ideal)  "
                    f"client CPU {cpu / n * 1000:.3f} ms/call, server "
                    f"{server_cpu / n * 1000:.3f} ms/call"
                )
            if fanout_hashes != bare_hashes:
                raise SystemExit("the two variants did not send the same request bodies")
    wall, bare = statistics.median(walls["fanout"]), statistics.median(walls["bare"])
    cpu_ms = statistics.median(cpus["fanout"]) / n * 1000
    bare_cpu_ms = statistics.median(cpus["bare"]) / n * 1000
    print(
        f"fanout {wall:.3f} s = {wall / ideal:.3f} x ideal; bare aiohttp {bare:.3f} s = "
        f"{bare / ideal:.3f} x ideal; fanout / bare = {wall / bare:.4f}"
    )
    print(
        f"client CPU per call: fanout {cpu_ms:.3f} ms, bare aiohttp {bare_cpu_ms:.3f} ms; "
        f"server {statistics.median(server_cpus) / n * 1000:.3f} ms; load average "
        f"{load:.2f} before, {os.getloadavg()[0] if hasattr(os, 'getloadavg') else math.nan:.2f}"
        " after"
    )
    figures = {
        "calls": n,
        "concurrency": c,
        "latency_s": latency,
        "repeat": args.repeat,
        "user_path": args.user_path,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "ratio": round(wall / ideal, 4),
        "bare_wall_s": round(bare, 3),
        "bare_ratio": round(bare / ideal, 4),
        "ratio_vs_bare": round(wall / bare, 4),
        "client_cpu_ms_per_call": round(cpu_ms, 3),
        "bare_cpu_ms_per_call": round(bare_cpu_ms, 3),
        "server_cpu_ms_per_call": round(statistics.median(server_cpus) / n * 1000, 3),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
