"""Planning where a run's notes go, timed: `reserve_places` on the canvases we know.

`CanvasSink` plans every note's place before the first call is sent (`reserve_places` ->
`Layout.place`), so this time is spent before any answer can come back. Per canvas: the
targets and notes as `fanout canvas run --agents ...` plans them (`plan_canvas`,
`note_slots`), and the CPU time `reserve_places` takes (the best of `--repeat`).

Canvases: bench/canvas.py's 20 questions with 4 agents (and 250 of them: 500 nodes), the 14
of bench/canvas_corpus.py with 2 and with 4 agents, the original system's fixtures
(tests/canvas/fixtures) and the example vault (`make demo`'s canvases), and seeded random
canvases with groups (`--random N`).

With `--check` every canvas is planned also by bench/canvas_layout_reference.py (the layout
before it was made fast, kept only for this) and the two must give identical places; the
reference's time is shown beside ours.

    .venv/bin/python bench/canvas_place.py [--check] [--repeat 3] [--random 40] [--only S]

Last line: JSON {"canvases", "notes", "ms" (ours, all canvases), "reference_ms",
"same" (with --check), "bench20_ms", "bench250_ms"}.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from canvas import make_canvas  # noqa: E402
from canvas_corpus import CORPUS as CORPUS_MAKERS  # noqa: E402
from canvas_corpus import write_corpus  # noqa: E402
from fanout.agents import builtin_blueprints  # noqa: E402
from fanout.canvas.layout import DEFAULT_GAP, Layout  # noqa: E402
from fanout.canvas.model import Canvas, Rect  # noqa: E402
from fanout.canvas.workflow import note_slots, plan_canvas  # noqa: E402
from fanout.errors import FanoutError  # noqa: E402

FOUR = ("oral-explanation", "memory-anchor", "comparison-table", "verification-question-agent")
TWO = FOUR[:2]
FIXTURES = ROOT / "tests" / "canvas" / "fixtures" / "original-system"
EXAMPLES = ROOT / "examples" / "vault"
#: the names of bench/canvas_corpus.py's canvases
CORPUS = list(CORPUS_MAKERS)


@dataclass(frozen=True)
class Case:
    """One canvas's placement problem: its nodes and groups and the notes asked for."""

    name: str
    nodes: list[Rect]
    groups: list[Rect]
    requests: list[tuple[Rect, int, tuple[float, float] | None]]
    #: nodes added between requests (as merge.py's fallback does): index -> rects
    added: dict[int, list[Rect]]

    @property
    def notes(self) -> int:
        return sum(n for _, n, _ in self.requests)


def case_of(name: str, canvas: Canvas, counts: Sequence[tuple[str, int]]) -> Case:
    """What `reserve_places(canvas, counts)` gives to the layout."""
    nodes = [r for n in canvas.nodes if (r := n.rect) is not None and n.type != "group"]
    groups = [r for n in canvas.nodes if (r := n.rect) is not None and n.type == "group"]
    requests: list[tuple[Rect, int, tuple[float, float] | None]] = []
    seen: set[str] = set()
    for target_id, count in counts:
        node = canvas.node(target_id)
        if node is None or node.rect is None or count < 1 or target_id in seen:
            continue
        seen.add(target_id)
        requests.append((node.rect, count, None))
    return Case(name, nodes, groups, requests, {})


def _planned(path: Path, agents: Sequence[str], name: str) -> Iterator[Case]:
    try:
        job = plan_canvas(path, builtin_blueprints(), agents=list(agents))
    except FanoutError:
        return  # a canvas with nothing to do
    yield case_of(name, job.canvas, note_slots(job, "individual"))


def random_case(seed: int, small: bool = False) -> Case:
    """Nodes of mixed sizes on a jittered grid, some in groups (nested too), targets among
    them with 1-5 notes, some requests of a fixed size and nodes added between requests.
    `small`: at most 5 x 5 nodes and 4 targets (cheap enough for the reference in a test)."""
    rng = random.Random(seed)
    most = 5 if small else 9
    cols, rows = rng.randint(2, most), rng.randint(2, most)
    pitch_x, pitch_y = rng.choice((200, 300, 450, 600)), rng.choice((80, 160, 260, 400))
    nodes: list[Rect] = []
    for i in range(cols):
        for j in range(rows):
            if rng.random() < 0.2:
                continue
            w, h = rng.choice((160, 250, 320, 400)), rng.choice((40, 60, 120, 200))
            x = i * pitch_x + rng.randint(-20, 20)
            y = j * pitch_y + rng.randint(-20, 20)
            nodes.append(Rect(float(x), float(y), float(min(w, pitch_x)), float(h)))
    groups: list[Rect] = []
    for _ in range(rng.randint(0, 3)):
        i0, j0 = rng.randrange(cols), rng.randrange(rows)
        i1, j1 = rng.randint(i0, cols - 1), rng.randint(j0, rows - 1)
        pad = rng.choice((20, 60, 200))
        g = Rect(
            float(i0 * pitch_x - pad),
            float(j0 * pitch_y - pad),
            float((i1 - i0 + 1) * pitch_x + 2 * pad),
            float((j1 - j0 + 1) * pitch_y + 2 * pad),
        )
        groups.append(g)
        if rng.random() < 0.5:
            groups.append(Rect(g.x + 10, g.y + 10, g.width / 2, g.height / 2))
    targets = rng.sample(nodes, k=min(len(nodes), rng.randint(1, 4 if small else 12)))
    requests: list[tuple[Rect, int, tuple[float, float] | None]] = []
    added: dict[int, list[Rect]] = {}
    for k, t in enumerate(targets):
        size = rng.choice((None, None, None, (400.0, 300.0), (160.0, 60.0)))
        requests.append((t, rng.randint(1, 5), size))
        if rng.random() < 0.2:
            added[k] = [Rect(t.right + 40, t.y, 200.0, 100.0)]
    return Case(f"{'small' if small else 'random'}-{seed}", nodes, groups, requests, added)


def cases(
    random_n: int,
    only: str = "",
    names: Collection[str] | None = None,
    bench: Sequence[int] = (20, 250),
    small: int = 0,
) -> Iterator[Case]:
    """Every canvas above (`names`: only those, by case name; `only`: names containing it):
    bench/canvas.py's canvas with each of `bench` targets, `random_n` random canvases and
    `small` small ones."""

    def wanted(name: str) -> bool:
        return (names is None or name in names) and only in name

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in bench:
            if wanted(f"bench-{n}"):
                path = make_canvas(folder / f"bench{n}", n)
                yield from _planned(path, FOUR, f"bench-{n}")
        corpus = [n for n in CORPUS if any(wanted(f"{n}-{k}") for k in (2, 4))]
        if corpus:
            for path in write_corpus(folder / "corpus", only=corpus):
                for agents in (TWO, FOUR):
                    if wanted(f"{path.stem}-{len(agents)}"):
                        yield from _planned(path, agents, f"{path.stem}-{len(agents)}")
        for path in sorted([*FIXTURES.glob("*.canvas"), *EXAMPLES.glob("*.canvas")]):
            if wanted(path.stem):
                yield from _planned(path, FOUR, path.stem)
    for seed in range(random_n):
        if wanted(f"random-{seed}"):
            yield random_case(seed)
    for seed in range(small):
        if wanted(f"small-{seed}"):
            yield random_case(seed, small=True)


def plan(case: Case, layout_class: Callable[..., Any]) -> list[tuple[float, ...]]:
    """Every place the layout gives, as (x, y, width, height, from side, to side)."""
    layout = layout_class(case.nodes, case.groups, gap=DEFAULT_GAP)
    out: list[tuple[Any, ...]] = []
    for k, (anchor, count, size) in enumerate(case.requests):
        for spot in layout.place(anchor, count, size):
            r = spot.rect
            out.append((r.x, r.y, r.width, r.height, spot.from_side, spot.to_side))
        for rect in case.added.get(k, ()):
            layout.add(rect)
    return out


def timed(case: Case, layout_class: Callable[..., Any], repeat: int) -> float:
    """The best of `repeat` runs, in seconds of this process's CPU time (the machine is
    shared: CPU time moves less with its load than wall time; placing is one thread)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        plan(case, layout_class)
        best = min(best, time.process_time() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the reference layout")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--random", type=int, default=40, help="seeded random canvases")
    ap.add_argument("--only", default="", help="only canvases whose name contains this")
    a = ap.parse_args()
    reference: Any = None
    if a.check:
        from canvas_layout_reference import Layout as reference

    total = {"canvases": 0, "notes": 0, "ms": 0.0, "reference_ms": 0.0, "same": True}
    print(f"{'canvas':<28} {'targets':>7} {'notes':>5} {'ms':>9} {'ref ms':>9} same")
    for case in cases(a.random, a.only):
        ours = timed(case, Layout, a.repeat)
        line = f"{case.name:<28} {len(case.requests):>7} {case.notes:>5} {ours * 1000:>9.1f}"
        total["canvases"] += 1
        total["notes"] += case.notes
        total["ms"] += ours * 1000
        if case.name in ("bench-20", "bench-250"):
            total[case.name.replace("-", "") + "_ms"] = round(ours * 1000, 1)
        if reference is not None:
            theirs = timed(case, reference, a.repeat)
            same = plan(case, Layout) == plan(case, reference)
            total["reference_ms"] += theirs * 1000
            total["same"] = total["same"] and same
            line += f" {theirs * 1000:>9.1f} {'yes' if same else 'NO'}"
        print(line, flush=True)
    total["ms"] = round(float(total["ms"]), 1)
    total["reference_ms"] = round(float(total["reference_ms"]), 1)
    if reference is None:
        del total["reference_ms"], total["same"]
    print(json.dumps(total))
    if not total.get("same", True):
        raise SystemExit("the places differ from the reference layout")


if __name__ == "__main__":
    main()
