"""Targets by colour, id and group; placeholders skipped; context up to two hops."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fanout.canvas import (
    find_targets,
    find_vault_root,
    is_placeholder,
    load_canvas,
    node_id_for,
)
from fanout.errors import InputError

from .support import FIXTURES, study_canvas, write_canvas

NOTE = """# 命题逻辑

## 原命题

若 p 则 q。

## 逆否命题

若非 q 则非 p，与原命题等价。

### 例子

若下雨则地湿 ⇔ 若地不湿则没下雨。

## 逆命题

若 q 则 p，不一定等价。
"""


def make(vault: Path, data: dict[str, Any] | None = None, name: str = "离散数学.canvas") -> Path:
    (vault / "笔记").mkdir(exist_ok=True)
    (vault / "笔记" / "命题逻辑.md").write_text(NOTE, encoding="utf-8")
    return write_canvas(vault / "课程", name, data or study_canvas())


def node(node_id: str, text: str, x: int, y: int, colour: str | None = "3") -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": text,
        "x": x,
        "y": y,
        "width": 300,
        "height": 100,
    }
    if colour:
        raw["color"] = colour
    return raw


def test_the_yellow_node_is_the_target_with_two_hops_of_context(vault: Path) -> None:
    sel = find_targets(load_canvas(make(vault)))
    assert [t.node_id for t in sel] == ["y1"]
    target = sel.targets[0]
    assert target.text.startswith("逆否命题就是")
    assert target.question == "什么是逆否命题？它与原命题等价吗？"
    assert [m.node_id for m in target.materials] == ["m1", "f1"]
    assert target.group_label == "第一章 命题逻辑"
    assert target.canvas_title == "离散数学"
    context = target.context
    assert "Canvas: 离散数学" in context
    assert "Group: 第一章 命题逻辑" in context
    assert 'Material (edge "出自"):\n命题逻辑基础' in context
    # the file node's note, only the section its subpath names (with its sub-heading)
    assert "Note 笔记/命题逻辑.md:\n## 逆否命题" in context
    assert "若下雨则地湿" in context
    assert "不一定等价" not in context
    assert target.inputs() == {
        "question": target.question,
        "learner_text": target.text,
        "topic": "离散数学",
        "context": context,
    }
    assert sel.hint is None


def test_targets_by_id_ignore_colour_and_unknown_ids_are_an_error(vault: Path) -> None:
    canvas = load_canvas(make(vault))
    assert [t.node_id for t in find_targets(canvas, ids=["q1", "y1"])] == ["q1", "y1"]
    sel = find_targets(canvas, ids=["g1", "l1"])
    assert sel.targets == []
    assert [s.node_id for s in sel.skipped] == ["g1", "l1"]
    with pytest.raises(InputError, match="不存在"):
        find_targets(canvas, ids=["y1", "不存在"])


def test_targets_by_group_label_or_id_and_the_innermost_group_label(vault: Path) -> None:
    data = study_canvas()
    data["nodes"] += [
        {
            "id": "g2",
            "type": "group",
            "label": "外层",
            "x": 2000,
            "y": 0,
            "width": 2000,
            "height": 2000,
        },
        {
            "id": "g3",
            "type": "group",
            "label": "内层",
            "x": 2100,
            "y": 100,
            "width": 800,
            "height": 800,
        },
        node("y2", "充分条件：有 p 就一定有 q。", 2200, 200),
        node("y3", "必要条件：没有 q 就一定没有 p。", 3200, 1200),
    ]
    canvas = load_canvas(make(vault, data))
    assert [t.node_id for t in find_targets(canvas, group="外层")] == ["y2", "y3"]
    inner = find_targets(canvas, group="g3")
    assert [(t.node_id, t.group_label) for t in inner] == [("y2", "内层")]
    everything = {t.node_id: t.group_label for t in find_targets(canvas)}
    assert everything == {"y1": "第一章 命题逻辑", "y2": "内层", "y3": "外层"}
    assert [t.node_id for t in find_targets(canvas, colour=None, group="内层")] == ["y2"]
    with pytest.raises(InputError, match="第二章"):
        find_targets(canvas, group="第二章")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n",
        "[请在此填写你的理解]",
        "[请填写你的理解]",
        "【请在这里写下你的解释】",
        "[请在此填写你对该问题的个人理解]",
        "待填写",
        "TODO",
        "……",
    ],
)
def test_empty_and_placeholder_nodes_are_skipped_with_a_note(vault: Path, text: str) -> None:
    data = {"nodes": [node("y", text, 0, 0)], "edges": []}
    sel = find_targets(load_canvas(make(vault, data)))
    assert sel.targets == []
    assert len(sel.skipped) == 1
    assert sel.skipped[0].node_id == "y"
    assert "empty" in sel.skipped[0].reason or "placeholder" in sel.skipped[0].reason


def test_real_answers_are_not_placeholders_and_patterns_are_configurable() -> None:
    assert not is_placeholder("请在此填写的意思是：逆否命题和原命题等价，因为……")
    assert not is_placeholder("[1] 逆否命题：若非 q 则非 p")
    assert is_placeholder("（未作答）", [r"（未作答）"])
    assert not is_placeholder("（未作答）", [])


def test_malformed_and_our_own_nodes_are_never_targets_or_context(vault: Path) -> None:
    ours = node_id_for("y1", "oral-explanation")
    data = study_canvas()
    data["nodes"] += [
        {
            "id": "bad",
            "type": "text",
            "content": "没有 text 字段",
            "x": 0,
            "y": 0,
            "width": 1,
            "height": 1,
            "color": "3",
        },
        {
            "id": ours,
            "type": "file",
            "file": "x.md",
            "x": 0,
            "y": 900,
            "width": 1,
            "height": 1,
            "color": "3",
        },
    ]
    data["edges"] += [
        {"id": "to-bad", "fromNode": "bad", "toNode": "y1"},
        {"id": "to-ghost", "fromNode": "幽灵", "toNode": "y1"},
        {"id": "from-ours", "fromNode": ours, "toNode": "y1"},
    ]
    sel = find_targets(load_canvas(make(vault, data)))
    assert [t.node_id for t in sel] == ["y1"]
    assert [q.node_id for q in sel.targets[0].questions] == ["q1"]
    assert {s.node_id for s in sel.skipped} == {"bad", ours}
    assert any(w.code == "dangling-edge" for w in sel.warnings)


def test_a_file_node_target_explains_its_note(vault: Path) -> None:
    data = study_canvas()
    data["nodes"].append(
        {
            "id": "yf",
            "type": "file",
            "file": "笔记/命题逻辑.md",
            "x": 0,
            "y": 2000,
            "width": 1,
            "height": 1,
            "color": "3",
        }
    )
    data["nodes"].append(
        {
            "id": "escape",
            "type": "file",
            "file": "../../../etc/passwd",
            "x": 0,
            "y": 2100,
            "width": 1,
            "height": 1,
            "color": "3",
        }
    )
    sel = find_targets(load_canvas(make(vault, data)))
    texts = {t.node_id: t.text for t in sel}
    assert texts["yf"] == NOTE
    assert "escape" not in texts  # never read outside the vault
    assert any(s.node_id == "escape" and "not in the vault" in s.reason for s in sel.skipped)


def test_an_orphan_target_gets_its_group_or_own_text_as_question(vault: Path) -> None:
    data = {"nodes": [node("solo", "我觉得幂集就是所有子集的集合。", 0, 0)], "edges": []}
    target = find_targets(load_canvas(make(vault, data))).targets[0]
    assert target.questions == ()
    assert target.group_label is None
    assert target.inputs()["question"] == "我觉得幂集就是所有子集的集合。"


def test_the_vault_root_is_the_nearest_obsidian_folder(vault: Path, tmp_path: Path) -> None:
    path = make(vault)
    assert find_vault_root(path) == vault
    loose = write_canvas(tmp_path / "散落", "白板.canvas", {"nodes": []})
    assert find_vault_root(loose) == loose.parent


def test_a_hint_names_the_colour_that_looks_like_learner_nodes() -> None:
    canvas = load_canvas(FIXTURES / "test-batch-scoring.canvas")
    assert canvas.nodes
    assert find_targets(canvas, colour="5").hint is not None
    hint = find_targets(canvas, colour="5").hint
    assert hint is not None
    assert hint.colour == "6"
    assert hint.count == 3
    assert '"6"' in hint.message
    assert find_targets(canvas, colour="6").hint is None
    review = load_canvas(FIXTURES / "test-review-canvas.canvas")
    sel = find_targets(review, colour="6")
    assert sel.targets == []
    assert len(sel.skipped) == 3


def test_the_original_systems_canvas_has_material_question_target(vault: Path) -> None:
    # the fixture as shipped holds only placeholders: every yellow node is skipped as one
    shipped = find_targets(load_canvas(FIXTURES / "test-v11-compatibility.canvas"), colour="6")
    assert shipped.targets == []
    assert len(shipped.skipped) == 17
    assert all(s.reason.startswith("placeholder text") for s in shipped.skipped)
    # a copy where the learner answered three of them: exactly those are targets, each with
    # its question (one hop) and the material the question was taken from (two hops)
    data = json.loads((FIXTURES / "test-v11-compatibility.canvas").read_text(encoding="utf-8"))
    yellow = [n for n in data["nodes"] if n.get("color") == "6"]
    answered = {
        yellow[0]["id"]: "逆否命题与原命题等价。",
        yellow[5]["id"]: "幂集是所有子集的集合。",
    }
    answered[yellow[16]["id"]] = "A 的补集是全集中不属于 A 的元素。"
    for raw in yellow:
        raw["text"] = answered.get(raw["id"], raw["text"])
    sel = find_targets(load_canvas(write_canvas(vault, "v11 作答.canvas", data)), colour="6")
    assert [t.node_id for t in sel] == [n["id"] for n in yellow if n["id"] in answered]
    assert [t.text for t in sel] == [answered[t.node_id] for t in sel]
    assert [s.node_id for s in sel.skipped] == [n["id"] for n in yellow if n["id"] not in answered]
    for target in sel:
        assert [q.text for q in target.questions] == ["测试问题"]
        assert [q.edge_label for q in target.questions] == ["个人理解"]
        assert [(m.node_id, m.edge_label) for m in target.materials] == [("material-123", "拆解自")]
    pool = find_targets(load_canvas(FIXTURES / "test-agent-pool.canvas"), colour="6")
    (target,) = pool.targets
    assert target.question == "什么是逆否命题？"
    assert [m.node_id for m in target.materials] == ["material-001"]
    assert target.materials[0].edge_label == "参考"
