"""Where notes land: the generated corpus through the real write path, measured.

Each canvas of bench/canvas_corpus.py goes through `fanout canvas run`'s code path
(plan_canvas -> Engine on the simulator -> CanvasSink -> write_results) with `--agents`
per yellow target, answers arriving in an order set by the simulator's latency jitter.
Then it is run again from the original with another jitter seed (a different arrival
order, no cache), and the two canvases are compared byte for byte.

Per canvas and overall:
- near: share of notes whose nearest original node (edge-to-edge distance, groups left
  out) is their own target (a tie counts for the target);
- cross: share of new edges whose straight line (side midpoint to side midpoint, as the
  sides are written) passes through a node other than its two ends;
- dist: mean gap between a note and its target, in target widths;
- overlap: new nodes sharing area with any other node (must be 0);
- lines: original lines changed or removed (difflib over the file's lines);
- same: both arrival orders gave byte-identical canvases.

    .venv/bin/python bench/canvas_layout.py [--seed 7] [--agents a,b] [--only NAME,...]
        [--keep DIR]

Last line: JSON {"notes", "near", "cross", "dist", "overlap", "lines_max", "same"}.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from canvas_corpus import write_corpus  # noqa: E402
from fanout import Engine, SimConfig, SimProvider  # noqa: E402
from fanout.agents import builtin_blueprints  # noqa: E402
from fanout.canvas.workflow import CanvasSink, plan_canvas  # noqa: E402

AGENTS = ("oral-explanation", "memory-anchor")
Box = tuple[float, float, float, float]  # x, y, width, height


def _box(node: Any) -> Box | None:
    try:
        return (float(node["x"]), float(node["y"]), float(node["width"]), float(node["height"]))
    except (KeyError, TypeError, ValueError):
        return None


def gap(a: Box, b: Box) -> float:
    """Edge-to-edge distance between two rectangles (0 when they touch or overlap)."""
    dx = max(b[0] - (a[0] + a[2]), a[0] - (b[0] + b[2]), 0.0)
    dy = max(b[1] - (a[1] + a[3]), a[1] - (b[1] + b[3]), 0.0)
    return math.hypot(dx, dy)


def side_point(box: Box, side: str | None) -> tuple[float, float]:
    x, y, w, h = box
    return {
        "top": (x + w / 2, y),
        "bottom": (x + w / 2, y + h),
        "left": (x, y + h / 2),
        "right": (x + w, y + h / 2),
    }.get(side or "", (x + w / 2, y + h / 2))


def segment_hits(p: tuple[float, float], q: tuple[float, float], box: Box) -> bool:
    """Does the segment p-q pass through the inside of `box` (shrunk by 1 px)?"""
    x0, y0, x1, y1 = box[0] + 1, box[1] + 1, box[0] + box[2] - 1, box[1] + box[3] - 1
    if x1 <= x0 or y1 <= y0:
        return False
    t0, t1 = 0.0, 1.0
    dx, dy = q[0] - p[0], q[1] - p[1]
    for d, lo, hi, s in ((dx, x0, x1, p[0]), (dy, y0, y1, p[1])):
        if d == 0:
            if not lo < s < hi:
                return False
            continue
        a, b = (lo - s) / d, (hi - s) / d
        a, b = min(a, b), max(a, b)
        t0, t1 = max(t0, a), min(t1, b)
        if t0 >= t1:
            return False
    return True


@dataclass
class Figures:
    notes: int = 0
    near: int = 0
    edges: int = 0
    cross: int = 0
    dist_sum: float = 0.0
    overlap: int = 0
    lines: int = 0

    def add(self, other: Figures) -> None:
        for k in ("notes", "near", "edges", "cross", "dist_sum", "overlap"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.lines = max(self.lines, other.lines)

    def row(self) -> dict[str, Any]:
        return {
            "notes": self.notes,
            "near": round(self.near / self.notes, 3) if self.notes else None,
            "cross": round(self.cross / self.edges, 3) if self.edges else None,
            "dist": round(self.dist_sum / self.notes, 2) if self.notes else None,
            "overlap": self.overlap,
        }


def measure(before: str, after: str) -> Figures:
    """The figures of one canvas: its text before and after a run."""
    old, new = json.loads(before), json.loads(after)
    old_ids = {n["id"] for n in old.get("nodes", [])}
    old_edges = {e["id"] for e in old.get("edges", [])}
    boxes = {n["id"]: b for n in new["nodes"] if (b := _box(n)) is not None}
    groups = {n["id"] for n in new["nodes"] if n.get("type") == "group"}
    originals = [(i, boxes[i]) for i in old_ids if i in boxes and i not in groups]
    added = {n["id"] for n in new["nodes"] if n["id"] not in old_ids}
    f = Figures()
    target_of: dict[str, str] = {}
    for e in new.get("edges", []):
        if e["id"] in old_edges or e.get("toNode") not in added:
            continue
        target_of[e["toNode"]] = e["fromNode"]
        f.edges += 1
        a, b = boxes[e["fromNode"]], boxes[e["toNode"]]
        p, q = side_point(a, e.get("fromSide")), side_point(b, e.get("toSide"))
        ends = {e["fromNode"], e["toNode"]}
        if any(segment_hits(p, q, box) for i, box in boxes.items() if i not in ends | groups):
            f.cross += 1
    solid = [(i, b) for i, b in boxes.items() if i not in groups]
    for nid in sorted(added):
        target = target_of.get(nid)
        if target is None or nid not in boxes:
            continue
        box, tbox = boxes[nid], boxes[target]
        f.notes += 1
        own = gap(box, tbox)
        nearest = min((gap(box, b) for i, b in originals if i != target), default=math.inf)
        f.near += own <= nearest + 1e-6
        f.dist_sum += own / tbox[2]
        f.overlap += any(
            i != nid and _overlap(box, b) for i, b in solid
        )  # the grid of a 3,000-node canvas is small enough to scan
    f.lines = changed_lines(before, after)
    return f


def _overlap(a: Box, b: Box) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def changed_lines(before: str, after: str) -> int:
    """Lines of `before` that are not in `after` unchanged."""
    a, b = before.splitlines(), after.splitlines()
    ops = difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    return sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag in ("replace", "delete"))


async def run_canvas(path: Path, agents: Sequence[str], seed: int) -> None:
    """One `fanout canvas run` of `path` on the simulator; answers in a seed-set order."""
    job = plan_canvas(path, builtin_blueprints(), agents=list(agents))
    for t in job.tasks:
        t.provider = "sim"
    sim = SimProvider(SimConfig(seed=seed, base_latency_s=0.004, per_token_s=0.0, jitter=1.0))
    async with Engine(providers={"sim": sim}, concurrency=32) as engine:
        run = engine.submit(job.tasks, kind="canvas")
        sink = CanvasSink(job, "individual")
        sink.attach(run)
        await run.wait()
        await sink.finish(run)


def run_corpus(
    folder: Path, agents: Sequence[str], seed: int, only: list[str] | None
) -> Iterable[tuple[str, Figures, bool]]:
    """Per canvas: its figures after one run, and whether a second run matched it."""
    originals = write_corpus(folder / "original", seed, only)
    for path in originals:
        before = path.read_text("utf-8")
        outputs = []
        for k, jitter_seed in enumerate((1, 2)):
            vault = folder / f"run{k}"
            if vault.exists():
                shutil.rmtree(vault)
            shutil.copytree(path.parent, vault, ignore=shutil.ignore_patterns("*-explanations"))
            copy = vault / path.name
            asyncio.run(run_canvas(copy, agents, jitter_seed))
            outputs.append(copy.read_bytes())
            if k == 0:
                shutil.copy(copy, folder / "original" / f"{path.stem}.after.canvas.json")
        yield path.stem, measure(before, outputs[0].decode("utf-8")), outputs[0] == outputs[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--agents", default=",".join(AGENTS))
    ap.add_argument("--only", default="")
    ap.add_argument("--keep", type=Path, help="keep the canvases (before and after) here")
    a = ap.parse_args()
    agents = [s for s in a.agents.split(",") if s]
    only = [s for s in a.only.split(",") if s] or None
    with tempfile.TemporaryDirectory() as tmp:
        folder = a.keep or Path(tmp)
        total, same = Figures(), True
        print(f"{'canvas':<8} {'notes':>5} {'near':>6} {'cross':>6} {'dist':>6} "
              f"{'overlap':>7} {'lines':>6} same")  # fmt: skip
        for name, f, identical in run_corpus(folder, agents, a.seed, only):
            r = f.row()
            print(
                f"{name:<8} {r['notes']:>5} {_pct(r['near'])} {_pct(r['cross'])} "
                f"{r['dist'] if r['dist'] is not None else '-':>6} {r['overlap']:>7} "
                f"{f.lines:>6} {'yes' if identical else 'NO'}"
            )
            total.add(f)
            same = same and identical
        r = total.row()
        print(
            f"{'overall':<8} {r['notes']:>5} {_pct(r['near'])} {_pct(r['cross'])} "
            f"{r['dist']:>6} {r['overlap']:>7} {total.lines:>6} {'yes' if same else 'NO'}"
        )
        print(json.dumps({**r, "lines_max": total.lines, "same": same}))


def _pct(x: float | None) -> str:
    return f"{x * 100:5.1f}%" if x is not None else "     -"


if __name__ == "__main__":
    main()
