"""What the scheduler's property tests cost per hypothesis profile: wall and CPU seconds of
`pytest tests/engine/test_invariants.py` with HYPOTHESIS_PROFILE=dev (40 examples, the
default) and =ci (200 examples, what CI=true picks), in child processes.

    .venv/bin/python bench/property_suite.py

CPU seconds (user + sys of the child) are what the tests cost; wall seconds depend on the
machine's load, which is printed with them. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = "tests/engine/test_invariants.py"


def measure(profile: str) -> dict[str, float | str]:
    env = {**os.environ, "HYPOTHESIS_PROFILE": profile}
    env.pop("CI", None)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "pytest", TESTS, "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{profile}: the tests failed:\n{p.stdout[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "profile": profile,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "load_1min": round(os.getloadavg()[0], 1),
    }


def main() -> None:
    rows = [measure("dev"), measure("ci")]
    for r in rows:
        wall, cpu, load = r["wall_s"], r["cpu_s"], r["load_1min"]
        print(f"{r['profile']:>4}: {wall:>6} s wall  {cpu:>6} s CPU  load {load}")
    print(json.dumps({"tests": TESTS, "profiles": rows}))


if __name__ == "__main__":
    main()
