"""Every figure of `docs/benchmarks.md`'s summary, measured one after the other at one commit.

Runs each benchmark as its own process, in sequence (never two at once: they would share
the two cores), with the sizes the summary quotes. Records the 1-minute load average before
and after each, reads the figures from each script's last line (one JSON object), and prints
one Markdown table row per target: the figure, the target and whether it is met. The raw
figures and loads go to `--out` as JSON, so a table can be rebuilt without re-running.

    .venv/bin/python bench/summary.py [--only overhead,wall,...] [--out FILE]

About 20 minutes on an idle 2-core machine, Ray included. Measure on an idle machine:
every wall-clock figure here is disturbed by other work on the cores (the rows say the load).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
Figures = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One row of the summary: a figure read from a benchmark's JSON, and its bar."""

    label: str
    value: Callable[[Figures], float]
    ok: Callable[[float], bool]
    bar: str


@dataclass(frozen=True)
class Bench:
    name: str
    argv: tuple[str, ...]
    targets: tuple[Target, ...]


def _procs(*extra: str) -> tuple[str, ...]:
    return (
        "ratelimit_procs.py",
        "--latency",
        "0.5",
        "--concurrency",
        "16",
        "--together",
        "30",
        "--alone",
        "20",
        *extra,
    )


def _shared(label: str, floor: float, max_429: float | None) -> tuple[Target, ...]:
    rows = [
        Target(
            f"{label}: `together`", lambda f: f["together"], lambda v: v >= floor, f">= {floor}"
        ),
        Target(f"{label}: failed", lambda f: f["failed"], lambda v: v == 0, "0"),
    ]
    if max_429 is not None:
        rows.insert(
            1,
            Target(
                f"{label}: 429 share",
                lambda f: f["rejected_429_share"],
                lambda v: v <= max_429,
                f"<= {max_429}",
            ),
        )
    return tuple(rows)


def _speedups(f: Figures) -> float:
    """The worst speedup of serial_vs_parallel.py as a share of its ideal."""
    return min(float(f[f"speedup_{n}"]) / float(f[f"ideal_{n}"]) for n in (4, 8, 16))


BENCHES: tuple[Bench, ...] = (
    Bench(
        "overhead",
        ("overhead.py", "--tasks", "100000", "--repeat", "5"),
        (
            Target("`fanout_us`", lambda f: f["fanout_us"], lambda v: v <= 20, "<= 20"),
            Target(
                "fanout / `gather`+`Semaphore`",
                lambda f: f["fanout_us"] / f["gather_sem_us"],
                lambda v: True,
                "(2.02 at e5bbe5d)",
            ),
            Target("`fanout_rss_mb`", lambda f: f["fanout_rss_mb"], lambda v: v <= 100, "<= 100"),
        ),
    ),
    Bench(
        "wall",
        (
            "wall.py",
            "--tasks",
            "10000",
            "--concurrency",
            "64",
            "--latency",
            "0.05",
            "--repeat",
            "7",
        ),
        (Target("`ratio_vs_raw`", lambda f: f["ratio_vs_raw"], lambda v: v <= 1.01, "<= 1.01"),),
    ),
    Bench(
        "ratelimit",
        ("ratelimit.py", "--seconds", "60", "--rpm", "1200"),
        (
            Target("`utilisation`", lambda f: f["utilisation"], lambda v: v >= 0.95, ">= 0.95"),
            Target("`rejected_429`", lambda f: f["rejected_429"], lambda v: v == 0, "0"),
        ),
    ),
    Bench(
        "serial_vs_parallel",
        ("serial_vs_parallel.py", "--scale", "0.02", "--concurrency", "16", "--repeat", "5"),
        (Target("worst `speedup_N` / `ideal_N`", _speedups, lambda v: v >= 0.9, ">= 0.9"),),
    ),
    Bench(
        "ratelimit_http",
        ("ratelimit_http.py", "--seconds", "60", "--rpm", "1200"),
        (
            Target(
                "configured: `utilisation`",
                lambda f: f["utilisation"],
                lambda v: v >= 0.95,
                ">= 0.95",
            ),
            Target(
                "configured: 429 share",
                lambda f: f["rejected_429_share"],
                lambda v: v <= 0.01,
                "<= 0.01",
            ),
            Target(
                "adaptive: `adaptive_utilisation`",
                lambda f: f["adaptive_utilisation"],
                lambda v: v >= 0.85,
                ">= 0.85",
            ),
        ),
    ),
    Bench(
        "http_user_path",
        (
            "http_fanout.py",
            "--calls",
            "2000",
            "--concurrency",
            "64",
            "--repeat",
            "7",
            "--user-path",
        ),
        (
            Target("`ratio_vs_bare`", lambda f: f["ratio_vs_bare"], lambda v: v <= 1.15, "<= 1.15"),
            Target(
                "`client_cpu_ms_per_call`",
                lambda f: f["client_cpu_ms_per_call"],
                lambda v: v <= 1.5,
                "<= 1.5",
            ),
        ),
    ),
    Bench(
        "http_engine_only",
        ("http_fanout.py", "--calls", "2000", "--concurrency", "64", "--repeat", "7"),
        (Target("`ratio_vs_bare`", lambda f: f["ratio_vs_bare"], lambda v: v <= 1.15, "<= 1.15"),),
    ),
    Bench(
        "canvas_user_path",
        ("canvas.py", "--repeat", "3", "--user-path"),
        (
            Target("speedup, seed lanes", lambda f: f["speedup"], lambda v: True, "(none)"),
            Target(
                "speedup, no lane limits", lambda f: f["speedup_unlaned"], lambda v: True, "(none)"
            ),
            Target("`place_ms`", lambda f: f["place_ms"], lambda v: True, "(none)"),
        ),
    ),
    Bench(
        "faults",
        ("faults.py", "--tasks", "2000", "--concurrency", "32", "--latency", "0.3"),
        (
            Target("faulty / clean wall", lambda f: f["ratio"], lambda v: v <= 1.6, "<= 1.6"),
            Target("failed", lambda f: f["faulty_failed"], lambda v: v == 0, "0"),
        ),
    ),
    Bench(
        "adaptive_2s",
        (
            "ratelimit_http.py",
            "--only",
            "adaptive",
            "--latency",
            "2",
            "--concurrency",
            "64",
            "--seconds",
            "60",
        ),
        (
            Target(
                "`adaptive_utilisation`",
                lambda f: f["adaptive_utilisation"],
                lambda v: v >= 0.95,
                ">= 0.95",
            ),
        ),
    ),
    Bench(
        "procs_rpm_4",
        _procs("--procs", "4", "--rpm", "600", "--configure"),
        _shared("4 processes, 600 rpm each", 0.95, 0.01),
    ),
    Bench(
        "procs_tpm_4",
        _procs(
            "--procs",
            "4",
            "--rpm",
            "100000",
            "--tpm",
            "60000",
            "--tokens-per-call",
            "124",
            "--configure",
        ),
        _shared("4 processes, TPM binds", 0.95, 0.01),
    ),
    Bench(
        "procs_adaptive_4",
        _procs("--procs", "4", "--rpm", "600", "--no-rate-headers"),
        _shared("4 processes, nothing configured, no rate headers", 0.90, None),
    ),
    Bench(
        "ray",
        ("ray_backend.py",),
        (
            Target(
                "1,000 x 200 ms: Ray / local",
                lambda f: f["io_ray_over_local"],
                lambda v: v <= 1.05,
                "<= 1.05",
            ),
            Target(
                "200 x 50 ms CPU: local / Ray",
                lambda f: f["cpu_speedup"],
                lambda v: v >= 1.8,
                ">= 1.8",
            ),
            Target(
                "the same CPU work, no fanout (ceiling)",
                lambda f: f["bare_ray_speedup"],
                lambda v: True,
                "(none)",
            ),
        ),
    ),
)


def load() -> float:
    return os.getloadavg()[0]


def run(bench: Bench) -> Figures:
    """One benchmark in its own process; its last line's JSON plus the loads around it."""
    before = load()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(HERE / bench.argv[0]), *bench.argv[1:]],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{bench.name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    figures: Figures = json.loads(lines[-1])
    figures["_load"] = [before, load()]
    figures["_wall_s"] = round(time.monotonic() - started, 1)
    return figures


def rows(bench: Bench, figures: Figures) -> list[str]:
    lo, hi = figures["_load"]
    out = []
    for t in bench.targets:
        v = t.value(figures)
        met = "(no target)" if t.bar.startswith("(") else ("yes" if t.ok(v) else "**no**")
        shown = f"{v:.4g}" if isinstance(v, float) else str(v)
        out.append(
            f"| {bench.name} | {t.label} | **{shown}** | {t.bar} | {met} | {lo:.2f} → {hi:.2f} |"
        )
    return out


def commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
    )
    return head.stdout.strip() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated benchmark names (default: all)")
    ap.add_argument(
        "--out", type=Path, help="JSON of every figure (default: scratch/summary-<commit>.json)"
    )
    ap.add_argument(
        "--from", dest="from_", type=Path, help="print the table of an earlier --out, run nothing"
    )
    args = ap.parse_args()
    if args.from_:
        print_table(json.loads(args.from_.read_text()))
        return
    names = {b.name for b in BENCHES}
    wanted = args.only.split(",") if args.only else [b.name for b in BENCHES]
    unknown = set(wanted) - names
    if unknown:
        raise SystemExit(
            f"--only: unknown {', '.join(sorted(unknown))}; choose from {', '.join(sorted(names))}"
        )
    rev = commit()
    out = args.out or HERE.parent / "scratch" / f"summary-{rev}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"commit": rev}
    for bench in BENCHES:
        if bench.name not in wanted:
            continue
        print(f"{time.strftime('%H:%M:%S')} {bench.name} (load {load():.2f}) ...", flush=True)
        results[bench.name] = run(bench)
        out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"\nfigures in {out}")
    print_table(results)
    print(json.dumps(results))


def print_table(results: dict[str, Any]) -> None:
    table = [
        "| benchmark | figure | measured | target | met? | load |",
        "|---|---|---|---|---|---|",
    ]
    for bench in BENCHES:
        if bench.name in results:
            table += rows(bench, results[bench.name])
    print(f"\nat {results['commit']}\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
