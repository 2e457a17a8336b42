"""New nodes overlap nothing, sit near their target, and land in the same place every time."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from fanout.canvas import (
    NoteResult,
    Rect,
    WriteOptions,
    load_canvas,
    place_nodes,
    plan_writeback,
    write_results,
)
from fanout.canvas.layout import overlapping_pairs

from .support import assert_no_overlap, write_canvas

AGENTS = ("oral-explanation", "memory-anchor", "comparison-table")


def study_grid(targets: int) -> dict[str, Any]:
    """Per topic a question (red) with the learner's answer (yellow) below it, 10 per row,
    packed tighter than a new node, with a group around the first row."""
    nodes: list[dict[str, Any]] = [
        {
            "id": "组",
            "type": "group",
            "label": "第一组",
            "x": -20,
            "y": -20,
            "width": 5000,
            "height": 420,
        }
    ]
    edges: list[dict[str, Any]] = []
    for k in range(targets):
        x, y = (k % 10) * 480, (k // 10) * 420
        nodes.append(
            {
                "id": f"q{k}",
                "type": "text",
                "text": f"问题 {k}：什么是第 {k} 个概念？",
                "x": x,
                "y": y,
                "width": 400,
                "height": 150,
                "color": "1",
            }
        )
        nodes.append(
            {
                "id": f"y{k}",
                "type": "text",
                "text": f"我的理解 {k}：它是……的意思。",
                "x": x,
                "y": y + 180,
                "width": 400,
                "height": 180,
                "color": "3",
            }
        )
        edges.append({"id": f"e{k}", "fromNode": f"q{k}", "toNode": f"y{k}", "label": "个人理解"})
    return {"nodes": nodes, "edges": edges}


def rects(data: dict[str, Any]) -> list[Rect]:
    return [Rect(n["x"], n["y"], n["width"], n["height"]) for n in data["nodes"]]


def gap_between(a: Rect, b: Rect) -> float:
    dx = max(b.x - a.right, a.x - b.right, 0)
    dy = max(b.y - a.bottom, a.y - b.bottom, 0)
    return math.hypot(dx, dy)


def test_100_targets_times_3_agents_overlap_nothing_and_stay_near(vault: Path) -> None:
    path = write_canvas(vault, "大白板.canvas", study_grid(100))
    results = [NoteResult(f"y{k}", a, f"第 {k} 题的{a}解释") for k in range(100) for a in AGENTS]
    report = write_results(path, results)
    assert len(report.notes) == 300
    canvas = load_canvas(path)
    assert len(canvas.nodes) == 201 + 300
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
    new = [n.rect for n in canvas.nodes[201:] if n.rect is not None]
    assert len(new) == 300
    # packed tighter than a note: there is no room inside the grid, so they hug its outside
    outside = sorted(gap_between(r, Rect(0, 0, 4720, 4140)) for r in new)
    assert outside[len(outside) // 2] <= 4 * 440  # 300 notes fill ~5 layers round it


def test_with_room_around_each_target_its_notes_are_adjacent(vault: Path) -> None:
    data = study_grid(20)
    for k, node in enumerate(data["nodes"][1:]):  # spread the topics 1600 px apart
        node["x"] += (k // 2 % 10) * 1120
        node["y"] += (k // 20) * 800
    data["nodes"] = data["nodes"][1:]
    path = write_canvas(vault, "宽松.canvas", data)
    report = write_results(
        path, [NoteResult(f"y{k}", a, "解释") for k in range(20) for a in AGENTS]
    )
    by_id = {n.id: n.rect for n in load_canvas(path).nodes}
    for note in report.notes:
        target = by_id[note.target_id]
        assert target is not None
        assert gap_between(target, note.rect) <= 440, note  # next to it, or one slot away
    assert overlapping_pairs([r for r in by_id.values() if r is not None]) == []


def test_a_note_may_join_its_targets_group_but_never_cut_across_one(vault: Path) -> None:
    roomy = {"id": "宽", "type": "group", "label": "宽敞的组", "x": 0, "y": 0, "width": 1400,
             "height": 900}  # fmt: skip
    tight = {"id": "窄", "type": "group", "label": "紧凑的组", "x": 1500, "y": 0, "width": 500,
             "height": 300}  # fmt: skip
    data = {
        "nodes": [
            roomy,
            tight,
            {"id": "a", "type": "text", "text": "宽敞组里的理解", "x": 40, "y": 40, "width": 400,
             "height": 200, "color": "3"},
            {"id": "b", "type": "text", "text": "紧凑组里的理解", "x": 1540, "y": 40, "width": 400,
             "height": 200, "color": "3"},
        ]
    }  # fmt: skip
    path = write_canvas(vault, "分组.canvas", data)
    report = write_results(path, [NoteResult(t, ag, "解释") for t in ("a", "b") for ag in AGENTS])
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
    group = Rect(0, 0, 1400, 900)
    inside = [group.contains(n.rect) for n in report.notes if n.target_id == "a"]
    assert inside == [True, True, True]  # all three fit in the roomy group
    small = Rect(1500, 0, 500, 300)
    assert not any(small.overlaps(n.rect) for n in report.notes if n.target_id == "b")


def test_placement_is_deterministic(vault: Path) -> None:
    path = write_canvas(vault, "确定.canvas", study_grid(12))
    pairs = [(f"y{k}", a) for k in range(12) for a in AGENTS]
    first = [n.rect for n in plan_writeback(path, pairs).notes]
    second = [n.rect for n in plan_writeback(path, pairs).notes]
    assert first == second


def test_the_first_note_goes_right_of_its_target_then_below() -> None:
    target = Rect(0, 0, 400, 200)
    places = place_nodes([target], [(target, (400, 300))] * 3)
    assert places[0].rect == Rect(440, 0, 400, 300)
    assert (places[0].from_side, places[0].to_side) == ("right", "left")
    assert places[1].rect == Rect(440, 340, 400, 300)
    assert places[2].rect == Rect(0, 240, 400, 300)
    assert (places[2].from_side, places[2].to_side) == ("bottom", "top")


def test_a_node_walled_in_nearby_goes_below_everything() -> None:
    target = Rect(0, 0, 100, 100)
    wall = Rect(-20000, -20000, 40000, 19990)  # everything above and around, one huge group
    around = [Rect(-20000, 110, 40000, 30000)]
    (place,) = place_nodes([target, wall, *around], [(target, (400, 300))], max_rings=2)
    assert not any(place.rect.overlaps(r) for r in [target, wall, *around])


def test_existing_nodes_of_ours_keep_their_place_on_a_rerun(vault: Path) -> None:
    path = write_canvas(vault, "重跑.canvas", study_grid(3))
    write_results(path, [NoteResult("y0", "oral-explanation", "第一版")])
    data = load_canvas(path).data
    data["nodes"][-1]["x"] += 1234  # the learner moved our node
    write_canvas(vault, "重跑.canvas", data)
    write_results(path, [NoteResult("y0", "oral-explanation", "第二版")], WriteOptions())
    assert load_canvas(path).data["nodes"][-1]["x"] == data["nodes"][-1]["x"]
