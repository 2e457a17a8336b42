"""What recording spans costs: `bench/overhead.py`'s fanout variants, before and after.

The code before is an earlier commit's `src/` (extracted with `git archive` into a temporary
folder); the code after is this checkout's. Each measurement is one `bench/overhead.py
--variant V` subprocess, with `PYTHONPATH` pointing at one or the other `src/`; before and
after alternate round by round, so both see the same machine load. Figures are medians (peak
RSS: the largest). The store's cost per task is `fanout_store` minus `fanout` (memory store).
Beside the wall time per task (what `bench/overhead.py` reports), the CPU time per task of
the whole subprocess (user + sys, the store's writer thread included) is kept: on a machine
shared with other work the wall time swings, the CPU time much less (imports are in it, the
same on both sides, and they cancel in the store's cost).

    .venv/bin/python bench/spans_overhead.py --before b741bbd --tasks 50000 --repeat 5

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("fanout", "fanout_store")


def extract(commit: str, into: Path) -> Path:
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "src"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def measure(src: Path, variant: str, n: int, c: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(src))
    cmd = [sys.executable, str(ROOT / "bench" / "overhead.py"), "--variant", variant]
    cmd += ["--tasks", str(n), "--concurrency", str(c)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} ({src}) failed:\n{proc.stdout}{proc.stderr}")
    data: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    data["cpu_us"] = cpu / n * 1e6
    return data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", required=True, help="the commit to compare with")
    ap.add_argument("--tasks", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    n, c = args.tasks, args.concurrency
    with tempfile.TemporaryDirectory(prefix="fanout-before-") as tmp:
        sides = {"before": extract(args.before, Path(tmp)), "after": ROOT / "src"}
        us: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        rss: dict[tuple[str, str], list[float]] = {}
        size: dict[tuple[str, str], list[float]] = {}
        for rnd in range(1, args.repeat + 1):
            for v in VARIANTS:
                for side, src in sides.items():
                    m = measure(src, v, n, c)
                    us.setdefault((side, v), []).append(m["us"])
                    cpu.setdefault((side, v), []).append(m["cpu_us"])
                    rss.setdefault((side, v), []).append(m["rss_mb"])
                    if "bytes_per_task" in m:
                        size.setdefault((side, v), []).append(m["bytes_per_task"])
                    print(
                        f"  round {rnd}  {side:<6} {v:<13} {m['us']:8.2f} us/task  "
                        f"cpu {m['cpu_us']:8.2f} us/task  "
                        f"peak RSS {m['rss_mb']:7.1f} MB",
                        flush=True,
                    )
    med = {k: statistics.median(v) for k, v in us.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    peak = {k: max(v) for k, v in rss.items()}
    out: dict[str, float | int | str] = {"tasks": n, "concurrency": c, "before": args.before}
    print(f"{'':<8}{'memory us/task':>16}{'sqlite us/task':>16}{'store us/task':>15}", end="")
    print(f"{'store cpu us/task':>19}", end="")
    print(f"{'RSS MB (mem)':>14}{'RSS MB (sqlite)':>17}{'file B/task':>13}")
    for side in ("before", "after"):
        mem, sql = med[(side, "fanout")], med[(side, "fanout_store")]
        store = sql - mem
        store_cpu = med_cpu[(side, "fanout_store")] - med_cpu[(side, "fanout")]
        file_b = statistics.median(size[(side, "fanout_store")])
        print(
            f"{side:<8}{mem:16.2f}{sql:16.2f}{store:15.2f}{store_cpu:19.2f}"
            f"{peak[(side, 'fanout')]:14.1f}{peak[(side, 'fanout_store')]:17.1f}{file_b:13.0f}"
        )
        out.update(
            {
                f"{side}_memory_cpu_us": round(med_cpu[(side, "fanout")], 2),
                f"{side}_sqlite_cpu_us": round(med_cpu[(side, "fanout_store")], 2),
                f"{side}_store_cpu_us": round(store_cpu, 2),
                f"{side}_memory_us": round(mem, 2),
                f"{side}_sqlite_us": round(sql, 2),
                f"{side}_store_us": round(store, 2),
                f"{side}_rss_memory_mb": round(peak[(side, "fanout")], 1),
                f"{side}_rss_sqlite_mb": round(peak[(side, "fanout_store")], 1),
                f"{side}_file_bytes_per_task": round(file_b),
            }
        )
    growth = out["after_store_us"] / out["before_store_us"] - 1.0  # type: ignore[operator]
    growth_cpu = out["after_store_cpu_us"] / out["before_store_cpu_us"] - 1.0  # type: ignore[operator]
    print(f"store cost per task: {growth * 100:+.1f} % wall, {growth_cpu * 100:+.1f} % cpu")
    out["store_growth"] = round(growth, 4)
    out["store_growth_cpu"] = round(growth_cpu, 4)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
