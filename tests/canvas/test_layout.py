"""Notes land in one compact stack beside their target, at the canvas's scale, overlap
nothing, and land in the same place whatever order the answers arrive in."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout.agents import builtin_blueprints
from fanout.canvas import (
    NoteResult,
    Rect,
    WriteOptions,
    load_canvas,
    place_nodes,
    plan_writeback,
    write_results,
)
from fanout.canvas.layout import Layout, gap_between, overlapping_pairs
from fanout.canvas.merge import reserve_places
from fanout.canvas.workflow import CanvasSink, plan_canvas
from tests.benches import bench_module

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
        nodes.append({"id": f"q{k}", "type": "text", "text": f"问题 {k}：什么是第 {k} 个概念？",
                      "x": x, "y": y, "width": 400, "height": 150, "color": "1"})  # fmt: skip
        nodes.append({"id": f"y{k}", "type": "text", "text": f"我的理解 {k}：它是……的意思。",
                      "x": x, "y": y + 180, "width": 400, "height": 180, "color": "3"})  # fmt: skip
        edges.append({"id": f"e{k}", "fromNode": f"q{k}", "toNode": f"y{k}", "label": "个人理解"})
    return {"nodes": nodes, "edges": edges}


def test_100_targets_times_3_agents_overlap_nothing_and_stay_near(vault: Path) -> None:
    path = write_canvas(vault, "大白板.canvas", study_grid(100))
    results = [NoteResult(f"y{k}", a, f"第 {k} 题的{a}解释") for k in range(100) for a in AGENTS]
    report = write_results(path, results)
    assert len(report.notes) == 300
    canvas = load_canvas(path)
    assert len(canvas.nodes) == 201 + 300
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
    new = [n.rect for n in report.notes]
    # packed tighter than the smallest note: no room inside the grid, so they hug its outside
    outside = sorted(gap_between(r, Rect(0, 0, 4720, 4140)) for r in new)
    assert outside[len(outside) // 2] <= 4 * 440, outside[len(outside) // 2]


def test_a_stack_goes_right_of_its_target_level_with_its_top() -> None:
    target = Rect(0, 0, 400, 200)
    places = place_nodes([target], [(target, (400, 300))] * 3)
    assert [p.rect for p in places] == [
        Rect(440, 0, 400, 300),
        Rect(440, 320, 400, 300),
        Rect(440, 640, 400, 300),
    ]
    assert {(p.from_side, p.to_side) for p in places} == {("right", "left")}


def test_with_a_node_to_its_right_the_stack_goes_below_never_nearer_the_other() -> None:
    target, right = Rect(0, 0, 250, 60), Rect(290, 0, 250, 60)
    places = place_nodes([target, right], [(target, None)] * 2)
    # the whole stack is one row below it, ending level with its right side: a second
    # note right of the first would sit as near the other node as its own
    assert [p.rect for p in places] == [Rect(-270, 100, 250, 60), Rect(0, 100, 250, 60)]
    assert {(p.from_side, p.to_side) for p in places} == {("bottom", "top")}


def test_note_size_follows_the_canvas_within_bounds() -> None:
    skill = [Rect(k * 240, j * 160, 160, 40) for k in range(5) for j in range(3)]
    assert Layout(skill).size_for(skill[7]) == (160, 60)  # 160 x 40 skills: small notes
    cards = [Rect(k * 500, 0, 400, 200) for k in range(5)]
    assert Layout(cards).size_for(cards[2]) == (400, 200)
    huge = [Rect(k * 2000, 0, 1500, 900) for k in range(3)]
    assert Layout(huge).size_for(huge[1]) == (400, 300)  # never bigger than 400 x 300
    mixed = [Rect(0, 0, 250, 60), *[Rect(300 + k * 400, 0, 350, 120) for k in range(6)]]
    assert Layout(mixed).size_for(mixed[0]) == (350, 60)  # the neighbours' width, its height


def test_notes_on_a_skill_tree_are_its_size_and_hug_their_target(vault: Path) -> None:
    nodes = [
        {"id": f"s{k}-{j}", "type": "text", "text": f"技能 {k}-{j}", "x": k * 240, "y": j * 160,
         "width": 160, "height": 40, "color": "3" if (k, j) == (2, 1) else "4"}
        for k in range(5) for j in range(3)
    ]  # fmt: skip
    path = write_canvas(vault, "技能树.canvas", {"nodes": nodes, "edges": []})
    report = write_results(path, [NoteResult("s2-1", a, "解释") for a in AGENTS[:2]])
    target = Rect(480, 160, 160, 40)
    for note in report.notes:
        assert (note.rect.width, note.rect.height) == (160, 60)
        assert gap_between(note.rect, target) <= 40
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])


def test_a_note_joins_its_targets_group_when_there_is_room_and_never_cuts_across_one(
    vault: Path,
) -> None:
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
    mine = [n.rect for n in report.notes if n.target_id == "a"]
    assert [group.contains(r) for r in mine] == [True, True, True]  # all three fit inside
    assert [r.x for r in mine] == [480, 480, 480]  # as one stack right of the target
    small = Rect(1500, 0, 500, 300)
    outside = [n.rect for n in report.notes if n.target_id == "b"]
    assert not any(small.overlaps(r) for r in outside)  # the group was not grown either
    assert load_canvas(path).node("窄").raw["width"] == 500  # type: ignore[union-attr]
    assert all(gap_between(r, small) <= 400 for r in outside)  # beside it, not far away


def test_a_note_of_a_nested_group_stays_in_the_innermost_group_with_room(vault: Path) -> None:
    data = {
        "nodes": [
            {"id": "外", "type": "group", "x": 0, "y": 0, "width": 2000, "height": 1000},
            {"id": "内", "type": "group", "x": 40, "y": 40, "width": 900, "height": 500},
            {"id": "t", "type": "text", "text": "内层的理解", "x": 80, "y": 80, "width": 300,
             "height": 100, "color": "3"},
        ]
    }  # fmt: skip
    path = write_canvas(vault, "嵌套.canvas", data)
    report = write_results(path, [NoteResult("t", a, "解释") for a in AGENTS])
    inner = Rect(40, 40, 900, 500)
    assert all(inner.contains(n.rect) for n in report.notes)


def test_walled_in_it_goes_just_outside_everything_on_the_nearest_side() -> None:
    target = Rect(0, 0, 100, 100)
    wall = Rect(-20000, -20000, 40000, 19990)  # above and around
    floor = Rect(-20000, 110, 40000, 5000)  # below: the strip beside the target is too low
    (place,) = place_nodes([target, wall, floor], [(target, (400, 300))], max_rings=2)
    assert not any(place.rect.overlaps(r) for r in [target, wall, floor])
    # everything spans x -20000..20000, y -20000..5110: the bottom is the nearest way out
    assert place.rect == Rect(0, 5110 + 40, 400, 300)
    assert (place.from_side, place.to_side) == ("bottom", "top")
    (east,) = place_nodes([target, Rect(-90000, -500, 89990, 1000)], [(target, (400, 300))])
    assert east.rect.x == 140  # nothing to its right: no detour round the canvas


def test_placement_is_deterministic(vault: Path) -> None:
    path = write_canvas(vault, "确定.canvas", study_grid(12))
    pairs = [(f"y{k}", a) for k in range(12) for a in AGENTS]
    first = [n.rect for n in plan_writeback(path, pairs).notes]
    second = [n.rect for n in plan_writeback(path, pairs).notes]
    assert first == second


def test_writes_in_any_order_give_the_same_bytes_with_places_reserved(vault: Path) -> None:
    """What the sink does: places planned once, then targets written as they finish."""
    corpus = bench_module("canvas_corpus")
    data = corpus.generate(7, ["思维导图"])["思维导图"]
    text = corpus.obsidian_text(data)
    targets = [n["id"] for n in data["nodes"] if n.get("color") == "3"]
    outputs = []
    for k, order in enumerate(
        [targets, targets[::-1], random.Random(5).sample(targets, len(targets))]
    ):
        folder = vault / f"第{k}次"
        path = write_canvas(folder, "导图.canvas", {})
        path.write_text(text, encoding="utf-8")
        canvas = load_canvas(path)
        reserved = reserve_places(canvas, [(t, 2) for t in targets])
        options = WriteOptions(reserved=reserved, notes_dir=f"第{k}次/笔记")
        for t in order:  # one write per target, in this run's arrival order
            write_results(path, [NoteResult(t, a, f"{a} 的解释") for a in AGENTS[:2]], options)
        outputs.append(path.read_bytes().replace(f"第{k}次".encode(), b"X"))
    assert outputs[0] == outputs[1] == outputs[2]
    placed = json.loads(outputs[0])["nodes"][len(data["nodes"]) :]
    assert len(placed) == 2 * len(targets)


def test_a_run_with_answers_arriving_in_other_orders_writes_the_same_canvas(
    vault: Path,
) -> None:
    corpus = bench_module("canvas_corpus")
    data = corpus.generate(7, ["原系统"])["原系统"]
    outputs, orders = [], []
    for seed in (1, 2):
        folder = vault / f"运行{seed}"
        path = write_canvas(folder, "原系统.canvas", {})
        path.write_text(corpus.obsidian_text(data), encoding="utf-8")
        job = plan_canvas(path, builtin_blueprints(), agents=list(AGENTS[:2]))
        sim = fanout.SimProvider(
            fanout.SimConfig(seed=seed, base_latency_s=0.03, per_token_s=0.0, jitter=1.0)
        )

        async def go(job: Any = job, sim: Any = sim) -> list[str]:
            async with fanout.Engine(providers=sim, concurrency=32) as engine:
                run = engine.submit(job.tasks, kind="canvas")
                sink = CanvasSink(job, "individual")
                sink.attach(run)
                await run.wait()
                report = await sink.finish(run)
            return [n.target_id for r in report.reports for n in r.notes]

        orders.append(asyncio.run(go()))
        outputs.append(path.read_text(encoding="utf-8").replace(f"运行{seed}", "X"))
    assert orders[0] != orders[1]  # the answers did arrive in other orders
    assert outputs[0] == outputs[1]


@pytest.mark.parametrize(
    "name", ["思维导图", "技能树", "原系统", "学习网格", "架构图", "紧凑分组", "配色"]
)
def test_notes_are_nearest_their_own_target_on_generated_canvases(vault: Path, name: str) -> None:
    corpus, measure = bench_module("canvas_corpus"), bench_module("canvas_layout").measure
    data = corpus.generate(7, [name])[name]
    before = corpus.obsidian_text(data)
    path = vault / f"{name}.canvas"
    path.write_text(before, encoding="utf-8")
    targets = [n["id"] for n in data["nodes"] if n.get("color") == "3"]
    write_results(path, [NoteResult(t, a, "解释") for t in targets for a in AGENTS[:2]])
    figures = measure(before, path.read_text(encoding="utf-8"))
    assert figures.notes == 2 * len(targets)
    assert figures.overlap == 0
    assert figures.near / figures.notes >= 0.9, figures
    assert figures.cross / figures.edges <= 0.1, figures


def test_a_reserved_place_taken_meanwhile_is_not_used(vault: Path) -> None:
    path = write_canvas(vault, "中途.canvas", study_grid(2))
    reserved = reserve_places(load_canvas(path), [("y0", 1)])
    (slot,) = reserved.slots["y0"]
    data = load_canvas(path).data
    r = slot.rect
    data["nodes"].append({"id": "新", "type": "text", "text": "学习者刚加的", "x": r.x, "y": r.y,
                          "width": r.width, "height": r.height})  # fmt: skip
    write_canvas(vault, "中途.canvas", data)
    report = write_results(path, [NoteResult("y0", "oral-explanation", "解释")],
                           WriteOptions(reserved=reserved))  # fmt: skip
    assert report.notes[0].rect != slot.rect
    assert overlapping_pairs([n.rect for n in load_canvas(path).nodes if n.rect][1:]) == []


def test_existing_nodes_of_ours_keep_their_place_on_a_rerun(vault: Path) -> None:
    path = write_canvas(vault, "重跑.canvas", study_grid(3))
    write_results(path, [NoteResult("y0", "oral-explanation", "第一版")])
    data = load_canvas(path).data
    data["nodes"][-1]["x"] += 1234  # the learner moved our node
    write_canvas(vault, "重跑.canvas", data)
    write_results(path, [NoteResult("y0", "oral-explanation", "第二版")], WriteOptions())
    assert load_canvas(path).data["nodes"][-1]["x"] == data["nodes"][-1]["x"]


def test_between_tight_groups_a_note_takes_the_gutter_and_enters_no_other_group() -> None:
    # two groups hugging their cards, 60 px apart: no room inside, the gutter is the
    # only place beside the answer; a strip of the smallest height fits it exactly
    top, below = Rect(0, 0, 700, 400), Rect(0, 460, 700, 400)
    question, answer = Rect(20, 20, 660, 160), Rect(20, 220, 660, 160)
    others = [Rect(20, 480, 660, 160), Rect(20, 680, 660, 160)]
    right, left = Rect(760, 0, 700, 400), Rect(-760, 0, 700, 400)  # groups beside it
    cards = [Rect(x, y, 660, 160) for x in (780, -740) for y in (20, 220)]
    groups = [top, below, right, left]
    places = place_nodes([question, answer, *others, *cards], [(answer, None)] * 2, groups=groups)
    for p in places:
        assert p.rect.y >= top.bottom
        assert p.rect.bottom <= below.y
        assert p.rect.height == 60
        assert p.rect.width > 160  # a strip, wider than the smallest note
        assert not any(p.rect.overlaps(g) for g in groups)
        assert (p.from_side, p.to_side) == ("bottom", "top")
    assert overlapping_pairs([p.rect for p in places]) == []
