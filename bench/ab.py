"""The engine's cost per task at two commits, measured in one process, interleaved.

On a shared, noisy machine two benchmark runs minutes apart differ by 10 % or more, which
hides any regression smaller than that. This script takes `src/fanout` at each git
revision (`git archive`), imports both side by side under other package names, and runs the
same no-op workload through each in turn, round after round in one process (the order
alternating), so both see the same machine. It reports the median per-task time of each and
the median of the per-round ratios: B / A.

    .venv/bin/python bench/ab.py 5f883a5 HEAD --tasks 40000 --rounds 24

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
_IMPORT = re.compile(r"\bfanout(?=[.\s])")


def checkout(rev: str, dest: Path, name: str) -> None:
    """`src/fanout` at `rev`, as package `name` under `dest` (its imports renamed)."""
    archive = subprocess.run(
        ["git", "archive", rev, "src/fanout"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    tmp = dest / f"_{name}"
    tmp.mkdir()
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(tmp, filter="data")
    (tmp / "src" / "fanout").rename(dest / name)
    for path in (dest / name).rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        text = re.sub(r"(from|import) fanout\b", rf"\1 {name}", text)
        path.write_text(_IMPORT.sub(name, text), encoding="utf-8")


async def noop(request: Any) -> str:
    return "ok"


async def one(m: ModuleType, n: int) -> float:
    tasks = [m.Task(f"question {i}") for i in range(n)]
    t0 = time.perf_counter()
    async with m.Engine(providers=m.CallableProvider(noop, name="noop"), concurrency=64) as e:
        run = e.submit(tasks)
        await run.wait()
        await run.results()
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", help="git revision A (the baseline)")
    ap.add_argument("b", help="git revision B")
    ap.add_argument("--tasks", type=int, default=40_000)
    ap.add_argument("--rounds", type=int, default=24)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        dest = Path(d)
        checkout(args.a, dest, "fanout_ab_a")
        checkout(args.b, dest, "fanout_ab_b")
        sys.path.insert(0, str(dest))
        mods = {k: importlib.import_module(f"fanout_ab_{k}") for k in ("a", "b")}
        us: dict[str, list[float]] = {"a": [], "b": []}
        for r in range(args.rounds):
            for k in ("a", "b") if r % 2 == 0 else ("b", "a"):
                gc.collect()
                us[k].append(asyncio.run(one(mods[k], args.tasks)))
            print(f"round {r + 1:>2}  A {us['a'][-1]:6.2f} us/task  B {us['b'][-1]:6.2f} us/task")
    ratio = statistics.median(b / a for a, b in zip(us["a"], us["b"], strict=True))
    out = {
        "a": args.a,
        "b": args.b,
        "tasks": args.tasks,
        "rounds": args.rounds,
        "a_us": round(statistics.median(us["a"]), 2),
        "b_us": round(statistics.median(us["b"]), 2),
        "ratio_b_over_a": round(ratio, 3),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
