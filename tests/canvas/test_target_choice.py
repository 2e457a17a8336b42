"""How targets are chosen (issue 12 point 4): ids whatever their colour, a group's text
nodes, never groups, links or legend swatches; every skipped node with its reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fanout.canvas import find_targets, load_canvas
from fanout.canvas.workflow import effective_colour

from .support import write_canvas


def text(node_id: str, body: str, x: int, y: int, colour: str | None = None, **size: int) -> Any:
    raw: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": body,
        "x": x,
        "y": y,
        "width": size.get("width", 400),
        "height": size.get("height", 200),
    }
    if colour is not None:
        raw["color"] = colour
    return raw


def group_canvas() -> dict[str, Any]:
    """An uncoloured group of a question, an answer, an empty node and a link, plus a
    yellow legend outside it and a yellow group."""
    return {
        "nodes": [
            {"id": "g", "type": "group", "label": "集合论", "x": 0, "y": 0},
            text("q", "什么是幂集？", 50, 50),
            text("a", "幂集是一个集合所有子集组成的集合。", 50, 300),
            text("empty", "  ", 500, 50),
            {
                "id": "web",
                "type": "link",
                "url": "https://zh.wikipedia.org/wiki/冪集",
                "x": 500,
                "y": 300,
                "width": 300,
                "height": 200,
            },
            {"id": "gy", "type": "group", "label": "复习", "color": "3", "x": 2000, "y": 0},
            text("yy", "对称差是只属于其中一个集合的元素。", 2050, 50, "3"),
            text("swatch", "黄色：我的理解", 1200, 1200, "3", width=120, height=40),
            text("tiny", "重点", 1200, 1300, "3", width=80, height=30),
        ],
        "edges": [{"id": "e", "fromNode": "q", "toNode": "a", "label": "个人理解"}],
    }


def make(folder: Path, data: dict[str, Any]) -> Path:
    for raw in data["nodes"]:  # groups sized to hold their nodes
        if raw["id"] == "g":
            raw.update(width=1000, height=700)
        if raw["id"] == "gy":
            raw.update(width=600, height=400)
    return write_canvas(folder, "离散 数学.canvas", data)


def test_a_group_alone_targets_all_its_text_nodes_and_says_so(vault: Path) -> None:
    canvas = load_canvas(make(vault, group_canvas()))
    sel = find_targets(canvas, colour=effective_colour(None, "集合论"), group="集合论")
    assert [t.node_id for t in sel] == ["q", "a"]
    assert [(s.node_id, s.reason.split(":")[0]) for s in sel.skipped] == [
        ("empty", "empty"),
        ("web", "a link node (a web page)"),
    ]
    assert sel.how == "every text node in group '集合论'"


def test_a_group_with_a_colour_targets_only_that_colour(vault: Path) -> None:
    canvas = load_canvas(make(vault, group_canvas()))
    sel = find_targets(canvas, colour=effective_colour("3", "集合论"), group="集合论")
    assert sel.targets == []
    assert sel.how == "colour \"3\" in group '集合论'"
    assert "no node matches" in sel.empty_reason()
    yellow = find_targets(canvas, colour="3", group="复习")
    assert [t.node_id for t in yellow] == ["yy"]
    assert yellow.skipped == []  # the group itself is not one of its own nodes


def test_without_a_group_the_default_colour_is_yellow(vault: Path) -> None:
    assert effective_colour(None, None) == "3"
    assert effective_colour("6", None) == "6"
    canvas = load_canvas(make(vault, group_canvas()))
    sel = find_targets(canvas, colour=effective_colour(None, None))
    assert [t.node_id for t in sel] == ["yy"]
    reasons = {s.node_id: s.reason for s in sel.skipped}
    assert reasons.keys() == {"gy", "swatch", "tiny"}
    assert reasons["gy"].startswith("a group, not a note")
    assert "legend swatch" in reasons["swatch"]
    assert "legend swatch" in reasons["tiny"]
    assert sel.how == 'colour "3"'


def test_ids_of_an_empty_node_and_a_link_say_why_they_are_not_targets(vault: Path) -> None:
    canvas = load_canvas(make(vault, group_canvas()))
    sel = find_targets(canvas, colour="3", ids=["empty", "web"])
    assert sel.targets == []
    assert sel.how == "ids empty, web (colour not used)"
    reason = sel.empty_reason()
    assert "empty: nothing to explain yet" in reason
    assert "a link node" in reason
    assert "colour '3'" not in reason
    # an id names the node whatever it looks like: a tiny node is a target when asked for
    assert [t.node_id for t in find_targets(canvas, ids=["tiny", "q"])] == ["q", "tiny"]


def test_a_small_node_with_an_edge_or_a_long_text_is_not_a_swatch(vault: Path) -> None:
    data = group_canvas()
    data["nodes"] += [
        text("short", "对", 3000, 0, "3", width=80, height=30),
        text(
            "long",
            "差集是属于前者而不属于后者的元素组成的集合",
            3000,
            100,
            "3",
            width=80,
            height=30,
        ),
    ]
    data["edges"].append({"id": "e2", "fromNode": "q", "toNode": "short"})
    sel = find_targets(load_canvas(make(vault, data)))
    assert [t.node_id for t in sel] == ["yy", "short", "long"]
