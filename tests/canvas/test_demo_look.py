"""The example vault as `make demo` leaves it looks right (issue 12 point 1): each target's
notes together in one column or row beside it, all one size, each nearer its own target
than any other node, and no new edge through another node."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fanout.canvas import NoteResult, Rect, find_targets, load_canvas, place_nodes, write_results
from fanout.canvas.layout import gap_between
from tests.benches import bench_module

from .support import EXAMPLES, assert_no_overlap

SMART = ("scoring-agent", "clarification-path", "oral-explanation", "basic-decomposition")


@pytest.mark.parametrize(
    ("name", "agents"),
    [
        ("离散数学", ("oral-explanation", "memory-anchor", "comparison-table")),
        ("数据结构", SMART),  # --smart: the scoring note and up to three more
    ],
)
def test_the_demo_canvases_keep_each_targets_notes_together_beside_it(
    tmp_path: Path, name: str, agents: tuple[str, ...]
) -> None:
    vault = tmp_path / "vault"
    shutil.copytree(EXAMPLES, vault)
    path = vault / f"{name}.canvas"
    before = path.read_text("utf-8")
    targets = find_targets(load_canvas(path)).targets
    results = [NoteResult(t.node_id, a, f"## {a}\n\n{t.question}") for t in targets for a in agents]
    report = write_results(path, results)
    assert len(report.notes) == len(targets) * len(agents)
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
    canvas = load_canvas(path)
    originals = {n.id: n.rect for n in load_canvas(path).nodes if n.type != "group" and n.rect}
    ours = {n.node_id for n in report.notes}
    originals = {k: r for k, r in originals.items() if k not in ours}
    sizes = {(n.rect.width, n.rect.height) for n in report.notes}
    assert len(sizes) == 1, sizes  # one size on the whole canvas
    width, height = sizes.pop()
    assert width >= 300
    assert height >= 200
    for target in targets:
        notes = [n.rect for n in report.notes if n.target_id == target.node_id]
        anchor = originals[target.node_id]
        # one column (same x) or one row (same y), beside the target
        assert len({r.x for r in notes}) == 1 or len({r.y for r in notes}) == 1, notes
        for rect in notes:
            own = gap_between(rect, anchor)
            others = [gap_between(rect, r) for k, r in originals.items() if k != target.node_id]
            assert own < min(others), (target.node_id, rect)
    figures = bench_module("canvas_layout").measure(before, path.read_text("utf-8"))
    assert figures.cross == 0
    assert figures.near == figures.notes
    assert figures.lines <= 2
    assert canvas.warnings == []


def test_a_stack_leaves_a_crowded_group_for_a_clean_column_beside_it() -> None:
    # the old example vault: question/answer pairs 80 px apart in a group with 40 px to spare
    group = Rect(-40, -80, 1480, 820)
    file_node, q1, a1 = Rect(0, 0, 440, 500), Rect(520, 0, 400, 140), Rect(520, 200, 400, 220)
    q2, a2 = Rect(1000, 0, 400, 140), Rect(1000, 200, 400, 220)
    nodes = [file_node, q1, a1, q2, a2]
    places = place_nodes(nodes, [(a2, None)] * 4, groups=[group])
    rects = [p.rect for p in places]
    # not split above and below the group: one column just right of it, level with a2
    assert len({r.x for r in rects}) == 1
    assert rects[0].x >= group.right
    assert rects[0].y == a2.y
    assert len({(r.width, r.height) for r in rects}) == 1
    assert {(p.from_side, p.to_side) for p in places} == {("right", "left")}
