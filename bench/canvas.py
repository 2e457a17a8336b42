"""The flagship job, measured: 20 canvas targets x 4 agents, serial vs parallel.

A canvas of `--targets` questions, each with the learner's yellow explanation, goes
through `fanout canvas run`'s code path (plan_canvas -> Engine -> CanvasSink) on the
simulator, each agent answering in its seed-note duration x `--scale` (one simulator per
agent). Serial is concurrency 1; parallel is `--concurrency` with the seed notes' lanes
(computation_intensive 2, io_intensive 4, lightweight 6), as a user gets by default, and
once more without lane limits. Write-back time is what the sink spent merging notes,
nodes and edges into the canvas, per target.

    .venv/bin/python bench/canvas.py [--targets 20] [--scale 0.02] [--repeat 3] [--user-path]

With `--user-path` each run is what a user of `fanout canvas run` gets, not only the engine:
planning (`plan_run`: the engine setup, reading and planning the canvas, the checks) is
inside the timed span, and `start_canvas` runs it with its defaults: the SQLite run store (a
fresh file in a fresh `FANOUT_HOME` each run, so the cache is cold, as on a first run), the
answer cache on, the backup of the canvas at the run's start. Only the providers are
swapped for the per-agent simulators after planning. Without it the engine runs with its
in-memory store and no cache, and planning is outside the span.

Placing the notes is what `CanvasSink` does before the first call is sent (every note's
place planned from the plan, `reserve_places`): its CPU time, alone after each round's
runs, on the same canvas; `place_share` is its median over the parallel run's (seed lanes)
median wall time.

Last line: {"targets", "agents", "serial_s", "parallel_s", "speedup", "writeback_ms_per_target",
"parallel_unlaned_s", "speedup_unlaned", "scale", "user_path", "place_ms", "place_share"}.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from fanout import Engine, SimConfig, SimProvider  # noqa: E402
from fanout.agents import builtin_blueprints  # noqa: E402
from fanout.canvas.merge import reserve_places  # noqa: E402
from fanout.canvas.run import CanvasChoice, plan_run, start_canvas  # noqa: E402
from fanout.canvas.workflow import CanvasSink, note_slots, plan_canvas  # noqa: E402
from fanout.launch import EngineChoice, RunOptions  # noqa: E402
from serial_vs_parallel import DURATIONS_S  # noqa: E402

AGENTS = ("oral-explanation", "memory-anchor", "comparison-table", "verification-question-agent")
SEED_LANES = {"computation_intensive": 2, "io_intensive": 4, "lightweight": 6}


def make_canvas(folder: Path, targets: int) -> Path:
    (folder / ".obsidian").mkdir(parents=True, exist_ok=True)
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    for i in range(targets):
        y = i * 260
        q, a = f"q{i:03d}", f"a{i:03d}"
        nodes.append(
            {
                "id": q,
                "type": "text",
                "x": 0,
                "y": y,
                "width": 320,
                "height": 120,
                "text": f"问题 {i}：什么是第 {i} 个概念？它和相近的概念有什么区别？",
            }
        )
        nodes.append(
            {
                "id": a,
                "type": "text",
                "x": 400,
                "y": y,
                "width": 320,
                "height": 120,
                "color": "3",
                "text": f"我的理解：第 {i} 个概念就是……我用自己的话解释一遍。",
            }
        )
        edges.append(
            {"id": f"e{i:03d}", "fromNode": q, "fromSide": "right", "toNode": a, "toSide": "left"}
        )
    path = folder / "基准.canvas"
    path.write_text(json.dumps({"nodes": nodes, "edges": edges}, ensure_ascii=False), "utf-8")
    return path


async def one_run(
    targets: int, scale: float, concurrency: int, lanes: dict[str, int]
) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = make_canvas(Path(tmp) / "vault", targets)
        job = plan_canvas(path, builtin_blueprints(), agents=list(AGENTS))
        for t in job.tasks:
            t.provider = f"sim-{t.agent}"
        providers = {
            f"sim-{a}": SimProvider(SimConfig(base_latency_s=DURATIONS_S[a] * scale, jitter=0.0))
            for a in AGENTS
        }
        t0 = time.perf_counter()
        async with Engine(providers=providers, concurrency=concurrency, lanes=lanes) as engine:
            run = engine.submit(job.tasks, kind="canvas")
            sink = CanvasSink(job, "individual")
            sink.attach(run)
            m = await run.wait()
            report = await sink.finish(run)
        wall = time.perf_counter() - t0
        if m["done"] != len(job.tasks):
            raise SystemExit(f"only {m['done']} of {len(job.tasks)} tasks done")
        if len(report.notes) != len(job.tasks):
            raise SystemExit(f"only {len(report.notes)} notes written")
        return wall, report.write_s


def place_time(targets: int) -> float:
    """CPU seconds `CanvasSink` spends placing every note of the run before its first call
    is sent (`reserve_places` on the plan, as the sink calls it). One thread computing, so
    on an idle core this is its wall time; on a shared, loaded machine the wall time is
    this stretched by whatever else runs (10 x at a load average of 26 on 2 cores)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = make_canvas(Path(tmp) / "vault", targets)
        job = plan_canvas(path, builtin_blueprints(), agents=list(AGENTS))
        t0 = time.process_time()
        reserve_places(job.canvas, note_slots(job, "individual"))
        return time.process_time() - t0


async def user_run(
    targets: int, scale: float, concurrency: int, lanes: dict[str, int]
) -> tuple[float, float]:
    """`fanout canvas run CANVAS --agents ... --concurrency C` without the CLI: planning in
    the span, the SQLite store in a fresh FANOUT_HOME, the cache on."""
    with tempfile.TemporaryDirectory() as tmp:
        path = make_canvas(Path(tmp) / "vault", targets)
        home = Path(tmp) / "home"
        home.mkdir()
        os.environ["FANOUT_HOME"] = str(home)
        options = RunOptions(choice=EngineChoice(provider="sim", concurrency=concurrency))
        if not options.cache:
            raise SystemExit("--user-path: the cache is expected on by default")
        t0 = time.perf_counter()
        planned = plan_run(CanvasChoice(path=str(path), agents=list(AGENTS)), options)
        planned.setup.providers = {
            f"sim-{a}": SimProvider(SimConfig(base_latency_s=DURATIONS_S[a] * scale, jitter=0.0))
            for a in AGENTS
        }
        planned.setup.engine["provider"] = f"sim-{AGENTS[0]}"
        planned.setup.engine["lanes"] = lanes
        for t in planned.job.tasks:
            t.provider = f"sim-{t.agent}"
        started = await start_canvas(planned, options, store_path=home / "runs.db")
        done = await started.finish()
        wall = time.perf_counter() - t0
        n = len(planned.job.tasks)
        if done.metrics["done"] != n or done.failures:
            raise SystemExit(f"only {done.metrics['done']} of {n} tasks done: {done.failures}")
        if len(done.report.notes) != n:
            raise SystemExit(f"only {len(done.report.notes)} notes written")
        return wall, done.report.write_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--scale", type=float, default=0.02)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--user-path",
        action="store_true",
        help="fanout canvas run's whole path: planning, the SQLite run store, the cache on",
    )
    a = ap.parse_args()
    print(
        f"canvas: {a.targets} targets x {len(AGENTS)} agents ({', '.join(AGENTS)}); "
        f"seed durations x {a.scale}; path: "
        + ("user (plan_run, SQLite store, cache on)" if a.user_path else "engine only")
    )
    run = user_run if a.user_path else one_run
    serial, par, unl, write, place = [], [], [], [], []
    for r in range(a.repeat):
        s, _ = asyncio.run(run(a.targets, a.scale, 1, {}))
        p, w = asyncio.run(run(a.targets, a.scale, a.concurrency, SEED_LANES))
        u, _ = asyncio.run(run(a.targets, a.scale, a.concurrency, {}))
        pl = place_time(a.targets)
        serial.append(s)
        par.append(p)
        unl.append(u)
        write.append(w)
        place.append(pl)
        print(
            f"  round {r + 1}: serial {s:.3f} s, parallel (seed lanes) {p:.3f} s, "
            f"parallel (no lanes) {u:.3f} s, write-back {w * 1000:.1f} ms, "
            f"placing the notes {pl * 1000:.1f} ms CPU"
        )
    s, p, u, w, pl = (statistics.median(x) for x in (serial, par, unl, write, place))
    out = {
        "targets": a.targets,
        "agents": len(AGENTS),
        "serial_s": round(s, 3),
        "parallel_s": round(p, 3),
        "speedup": round(s / p, 2),
        "writeback_ms_per_target": round(w * 1000 / a.targets, 2),
        "parallel_unlaned_s": round(u, 3),
        "speedup_unlaned": round(s / u, 2),
        "scale": a.scale,
        "user_path": a.user_path,
        "place_ms": round(pl * 1000, 1),
        "place_share": round(pl / p, 3),
    }
    print(
        f"speedup {out['speedup']}x with the seed lanes, {out['speedup_unlaned']}x without; "
        f"write-back {out['writeback_ms_per_target']} ms per target; placing the notes "
        f"{out['place_ms']} ms CPU, {out['place_share']:.1%} of the parallel run"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
