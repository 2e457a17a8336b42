"""`fanout bench`: the seed notes' comparison, serial against parallel, on the simulator,
with the pictures of every run.

The sets:

- `agents-4`, `agents-8`, `agents-16`: learning agents of one or two concepts, each lasting
  the middle of its range in the notes (Phase 5 design; section 1.2 "Sub-agent
  performance"): clarification-path 9 s, four-level-explanation 8 s, oral-explanation 7 s,
  deep-decomposition 4 s, comparison-table and verification-question-agent 3.5 s,
  memory-anchor and basic-decomposition 2.5 s, scoring-agent 2 s. The 4-task set is the
  notes' Phase 4 example.
- `pipeline`: the notes' layered analysis, 55 -> 12 -> 4 -> 1: 55 function items (10 to 15
  units each, the notes' "10-15 minutes" taken as seconds), then 12 features each waiting
  for its 4 or 5 items, 4 dimensions each waiting for 3 features, and one synthesis
  waiting for the 4 dimensions (5 units each).

Durations are multiplied by `scale` (default 0.02: 9 s becomes 180 ms). Each distinct
duration is its own in-process simulator (no jitter, no per-token time), so a call lasts
exactly its agent's duration. Each set runs at concurrency 1 (serial: the notes' Phase 4)
and at `concurrency` (parallel: Phase 5), in a SQLite run store in the output folder. The
wall time is the run's own (submission to its last task's end, as `fanout report` gives it).
Ideal serial = the sum of the durations; ideal parallel = the critical path (the longest
chain of dependent durations; for independent agents, the longest one); ideal speedup =
their ratio; share of ideal = speedup / ideal speedup.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from fanout.engine.engine import Engine
from fanout.errors import ConfigError
from fanout.providers.sim import SimConfig, SimProvider
from fanout.store.sqlite import SqliteStore, connect
from fanout.tasks import Task

#: seconds per agent: the middle of each range in the seed notes
DURATIONS_S: dict[str, float] = {
    "clarification-path": 9.0,
    "oral-explanation": 7.0,
    "four-level-explanation": 8.0,
    "comparison-table": 3.5,
    "memory-anchor": 2.5,
    "basic-decomposition": 2.5,
    "verification-question-agent": 3.5,
    "deep-decomposition": 4.0,
    "scoring-agent": 2.0,
}
#: the agent tasks, in order; the first N make the N-task set
AGENT_TASKS: tuple[tuple[str, str], ...] = (
    ("clarification-path", "递归函数"),
    ("oral-explanation", "递归函数"),
    ("memory-anchor", "递归函数"),
    ("memory-anchor", "尾递归"),
    ("four-level-explanation", "递归函数"),
    ("comparison-table", "递归函数"),
    ("basic-decomposition", "递归函数"),
    ("deep-decomposition", "递归函数"),
    ("verification-question-agent", "递归函数"),
    ("scoring-agent", "递归函数"),
    ("clarification-path", "动态规划"),
    ("oral-explanation", "动态规划"),
    ("four-level-explanation", "动态规划"),
    ("comparison-table", "动态规划"),
    ("memory-anchor", "动态规划"),
    ("deep-decomposition", "动态规划"),
)
#: the layered pipeline: tasks per layer, and the units one task of the layer takes
PIPELINE_LAYERS: tuple[int, ...] = (55, 12, 4, 1)
PIPELINE_NAMES: tuple[str, ...] = ("功能项", "特征", "维度", "整体")
SYNTHESIS_UNITS = 5.0
SETS: tuple[str, ...] = ("agents-4", "agents-8", "agents-16", "pipeline")
DEFAULT_SCALE = 0.02
DEFAULT_CONCURRENCY = 64


@dataclass(frozen=True)
class Job:
    """One task of a set: its duration (unscaled) and the keys it waits for."""

    key: str
    agent: str
    lane: str
    units: float
    deps: tuple[str, ...] = ()


def _groups(items: Sequence[str], n: int) -> list[list[str]]:
    """`items` cut into `n` consecutive groups of sizes differing by at most one."""
    size, extra = divmod(len(items), n)
    out, i = [], 0
    for g in range(n):
        k = size + (1 if g < extra else 0)
        out.append(list(items[i : i + k]))
        i += k
    return out


def jobs_of(name: str) -> list[Job]:
    if name not in SETS:
        raise ConfigError(f"no bench set {name!r}; choose from {', '.join(SETS)}")
    if name.startswith("agents-"):
        n = int(name.removeprefix("agents-"))
        return [
            Job(f"{agent}/{concept}/{i}", agent, "agents", DURATIONS_S[agent])
            for i, (agent, concept) in enumerate(AGENT_TASKS[:n])
        ]
    jobs: list[Job] = []
    below: list[str] = []
    for depth, (count, label) in enumerate(zip(PIPELINE_LAYERS, PIPELINE_NAMES, strict=True)):
        groups = _groups(below, count) if below else [[] for _ in range(count)]
        layer = []
        for i, deps in enumerate(groups):
            # the first layer's items last 10 to 15 units, spread evenly
            units = 10.0 + 5.0 * (i % 11) / 10 if depth == 0 else SYNTHESIS_UNITS
            key = f"{label}-{i + 1}"
            jobs.append(
                Job(key, f"第{depth + 1}层", f"第{depth + 1}层 {label}", units, tuple(deps))
            )
            layer.append(key)
        below = layer
    return jobs


def ideal(jobs: Sequence[Job]) -> tuple[float, float]:
    """(sum of the durations, the critical path), unscaled."""
    finish: dict[str, float] = {}
    for j in jobs:  # jobs come after what they wait for
        finish[j.key] = max((finish[d] for d in j.deps), default=0.0) + j.units
    return sum(j.units for j in jobs), max(finish.values())


@dataclass
class Row:
    name: str
    tasks: int
    serial_s: float
    parallel_s: float
    ideal_serial_s: float
    ideal_parallel_s: float
    speedup: float
    ideal_speedup: float
    share: float
    serial_run: str
    parallel_run: str


async def _one(
    jobs: Sequence[Job], concurrency: int, scale: float, store: Path
) -> tuple[str, float]:
    providers = {
        f"sim-{u:g}": SimProvider(SimConfig(base_latency_s=u * scale, jitter=0.0, per_token_s=0.0))
        for u in {j.units for j in jobs}
    }
    by_key: dict[str, Task] = {}
    for j in jobs:
        by_key[j.key] = Task(
            f"[{j.agent}] 请为「{j.key}」生成材料。",
            key=j.key,
            agent=j.agent,
            lane=j.lane,
            provider=f"sim-{j.units:g}",
            depends_on=[by_key[d] for d in j.deps],
        )
    lanes = {j.lane: concurrency for j in jobs}
    async with Engine(
        providers=providers, concurrency=concurrency, lanes=lanes, store=SqliteStore(store)
    ) as engine:
        run = engine.submit(list(by_key.values()))
        m = await run.wait()
    if m["done"] != len(jobs):
        raise RuntimeError(f"{len(jobs)} tasks at concurrency {concurrency}: {m['done']} done")
    return run.id, float(m["wall_s"])


def run_bench(
    sets: Sequence[str],
    out: Path,
    *,
    scale: float = DEFAULT_SCALE,
    concurrency: int = DEFAULT_CONCURRENCY,
    repeat: int = 1,
    pictures: bool = True,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """Run each set serially and in parallel `repeat` times (medians kept), write the pictures
    of each set's last pair of runs to `out`, and return the table's rows."""
    for name in sets:
        jobs_of(name)  # an unknown set is refused before anything runs
    if not 0 < scale <= 10:
        raise ConfigError(f"--scale {scale:g}: give a multiplier in (0, 10], e.g. 0.02")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; give a folder for the pictures")
    out.mkdir(parents=True, exist_ok=True)
    store = out / "bench.db"
    rows: list[Row] = []
    for name in sets:
        jobs = jobs_of(name)
        total, path = ideal(jobs)
        serial, parallel = [], []
        for _ in range(repeat):
            serial.append(asyncio.run(_one(jobs, 1, scale, store)))
            parallel.append(asyncio.run(_one(jobs, concurrency, scale, store)))
        s = statistics.median(w for _, w in serial)
        p = statistics.median(w for _, w in parallel)
        row = Row(
            name,
            len(jobs),
            s,
            p,
            total * scale,
            path * scale,
            s / p,
            total / path,
            (s / p) / (total / path),
            serial[-1][0],
            parallel[-1][0],
        )
        rows.append(row)
        progress(format_rows([row])[-1])
        if pictures:
            _pictures(store, out, name, row)
    (out / "bench.json").write_text(
        json.dumps(
            {
                "scale": scale,
                "concurrency": concurrency,
                "repeat": repeat,
                "rows": [asdict(r) for r in rows],
            },
            ensure_ascii=False,
            indent=1,
        )
        + "\n",
        encoding="utf-8",
    )
    if pictures and _has_matplotlib():
        _comparison_png(rows, out / "bench.png")
    return rows


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pictures(store: Path, out: Path, name: str, row: Row) -> None:
    from fanout.report.pictures import write_pictures
    from fanout.report.timeline import load_timeline

    db = connect(store)
    try:
        for mode, run_id in (("serial", row.serial_run), ("parallel", row.parallel_run)):
            tl = load_timeline(db, run_id)
            assert tl is not None
            stem = out / f"{name}-{mode}"
            write_pictures(
                tl,
                html=stem.with_suffix(".html"),
                trace=stem.with_suffix(".json"),
                png=stem.with_suffix(".png") if _has_matplotlib() else None,
            )
    finally:
        db.close()


def _comparison_png(rows: Sequence[Row], path: Path) -> None:
    from fanout.report.png import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    xs = range(len(rows))
    w = 0.27
    ax.bar(
        [x - w for x in xs],
        [r.serial_s for r in rows],
        w,
        label="serial (concurrency 1)",
        color="#bab0ac",
    )
    ax.bar(list(xs), [r.parallel_s for r in rows], w, label="parallel", color="#4e79a7")
    ax.bar(
        [x + w for x in xs],
        [r.ideal_parallel_s for r in rows],
        w,
        label="ideal parallel (critical path)",
        color="#59a14f",
    )
    for x, r in zip(xs, rows, strict=True):
        ax.annotate(
            f"{r.speedup:.1f}x of {r.ideal_speedup:.1f}x",
            (x, r.parallel_s),
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
            fontsize=9,
        )
    ax.set_xticks(list(xs), [f"{r.name}\n({r.tasks} tasks)" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("wall time (s, log scale)")
    ax.set_title("fanout bench: serial vs parallel on the simulator (speedup of ideal)", loc="left")
    ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_rows(rows: Sequence[Row]) -> list[str]:
    """The table: seconds with three decimals, so serial and its ideal stay apart."""
    head = (
        f"{'set':<10} {'tasks':>5}  {'serial':>8} {'ideal':>8}  {'parallel':>8} {'ideal':>8}  "
        f"{'speedup':>8} {'ideal':>7}  {'share of ideal':>14}"
    )
    out = [head]
    for r in rows:
        out.append(
            f"{r.name:<10} {r.tasks:>5}  {r.serial_s:>7.3f}s {r.ideal_serial_s:>7.3f}s  "
            f"{r.parallel_s:>7.3f}s {r.ideal_parallel_s:>7.3f}s  {r.speedup:>7.2f}x "
            f"{r.ideal_speedup:>6.2f}x  {r.share:>14.3f}"
        )
    return out
