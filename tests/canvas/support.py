"""Canvases for the tests: a realistic study canvas, and helpers to write and compare them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "original-system"
SHARED_FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "original-system"
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "vault"


def study_canvas() -> dict[str, Any]:
    """Material -> question -> the learner's yellow explanation, in a group, plus every type."""
    return {
        "nodes": [
            {
                "id": "g1",
                "type": "group",
                "x": -50,
                "y": -50,
                "width": 1500,
                "height": 900,
                "label": "第一章 命题逻辑",
                "background": "图片/背景.png",
                "backgroundStyle": "cover",
                "color": "#A0C4FF",
                "分组备注": {"层级": 1},
            },
            {
                "id": "m1",
                "type": "text",
                "text": "命题逻辑基础\n\n原命题：若 p 则 q；逆否命题：若非 q 则非 p。",
                "x": 0,
                "y": 0,
                "width": 400,
                "height": 300,
                "color": "2",
            },
            {
                "id": "q1",
                "type": "text",
                "text": "什么是逆否命题？它与原命题等价吗？",
                "x": 500,
                "y": 0,
                "width": 400,
                "height": 200,
                "color": "1",
            },
            {
                "id": "y1",
                "type": "text",
                "text": "逆否命题就是把条件和结论都否定再交换，它和原命题同真同假。",
                "x": 500,
                "y": 300,
                "width": 400,
                "height": 200,
                "color": "3",
                "自定义": [1, 2.5, None, True],
            },
            {
                "id": "f1",
                "type": "file",
                "file": "笔记/命题逻辑.md",
                "subpath": "#逆否命题",
                "x": 1000,
                "y": 0,
                "width": 400,
                "height": 400,
            },
            {
                "id": "l1",
                "type": "link",
                "url": "https://zh.wikipedia.org/wiki/逆否命題",
                "x": 1000,
                "y": 500,
                "width": 400,
                "height": 200,
                "color": "6",
            },
        ],
        "edges": [
            {
                "id": "e1",
                "fromNode": "m1",
                "fromSide": "right",
                "fromEnd": "none",
                "toNode": "q1",
                "toSide": "left",
                "toEnd": "arrow",
                "color": "#ff8800",
                "label": "出自",
            },
            {
                "id": "e2",
                "fromNode": "q1",
                "fromSide": "bottom",
                "toNode": "y1",
                "toSide": "top",
                "label": "个人理解",
                "未知字段": "保留",
            },
            {"id": "e3", "fromNode": "f1", "toNode": "q1", "color": "4"},
        ],
        "画布元数据": {"版本": 2, "作者": "小明"},
    }


def write_canvas(folder: Path, name: str, data: dict[str, Any], indent: str | int = "\t") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(data, ensure_ascii=False, indent=indent), encoding="utf-8")
    return path


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def assert_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Everything `before` held is in `after` unchanged; only nodes/edges may be appended.

    Compared with JSON types (`true` is not `1`, `1` is not `1.0`, `-0.0` is not `0.0`)."""
    from .canvas_text import strict

    for key, value in before.items():
        if key in ("nodes", "edges"):
            assert strict(after[key][: len(value)]) == strict(value), key
        else:
            assert strict(after[key]) == strict(value), key
    assert list(after)[: len(before)] == list(before)


def assert_no_overlap(path: Path, notes: list[tuple[str, str]]) -> None:
    """Each new node `(node id, target id)` shares no area with any other node, except that it
    may lie wholly inside a group that also holds its target."""
    from fanout.canvas import load_canvas
    from fanout.canvas.layout import overlapping_pairs

    canvas = load_canvas(path)
    target_of = dict(notes)
    nodes = [n for n in canvas.nodes if n.rect is not None]
    rects = [n.rect for n in nodes if n.rect is not None]
    for a, b in overlapping_pairs(rects):
        first, second = nodes[a], nodes[b]
        if first.id not in target_of and second.id not in target_of:
            continue  # the file's own nodes (a group and its members) may overlap
        new, other = (first, second) if first.id in target_of else (second, first)
        assert other.id not in target_of, f"two new nodes overlap: {new.id} {other.id}"
        assert other.type == "group", f"new node {new.id} overlaps node {other.id}"
        target = canvas.node(target_of[new.id or ""])
        assert target is not None
        assert target.rect is not None
        assert other.rect is not None
        assert new.rect is not None
        assert other.rect.contains(new.rect), f"{new.id} cuts across group {other.id}"
        assert other.rect.contains(target.rect), f"{new.id} sits in another group {other.id}"


def note_body(text: str) -> str:
    """A note's text without the header every note starts with (the link back to its
    canvas and the quoted first line of its target); asserts the header is there."""
    assert text.startswith("[["), text[:80]
    link, _, rest = text.partition("\n\n")
    assert link.endswith(".canvas]]"), link
    if rest.startswith("> "):
        _, _, rest = rest.partition("\n\n")
    return rest
