"""What a learner sees of fanout's additions (issue 12 point 5): edge labels are the agents'
names in the canvas's language, each note links back to its canvas and quotes its target."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from fanout.agents import builtin_blueprints, parse_blueprint
from fanout.canvas import load_canvas
from fanout.canvas.language import canvas_language
from fanout.canvas.workflow import edge_labels, plan_canvas

from .support import write_canvas
from .test_workflow import run_job


def canvas(question: str, answer: str) -> dict[str, Any]:
    size = {"width": 400, "height": 200}
    return {
        "nodes": [
            {"id": "q", "type": "text", "text": question, "x": 0, "y": 0, **size},
            {"id": "y", "type": "text", "text": answer, "x": 0, "y": 300, "color": "3", **size},
        ],
        "edges": [{"id": "e", "fromNode": "q", "toNode": "y"}],
    }


@pytest.mark.parametrize(
    ("question", "answer", "language"),
    [
        ("什么是幂集？", "幂集是所有子集的集合。", "zh"),
        ("What is a power set?", "The set of all subsets.", "en"),
        ("Was ist eine Potenzmenge?", "Die Menge aller Teilmengen.", "de"),
        ("べき集合とは何ですか？", "すべての部分集合の集合です。", "ja"),
        ("", "", "en"),
    ],
)
def test_the_canvas_language_is_read_from_its_text(
    vault: Path, question: str, answer: str, language: str
) -> None:
    path = write_canvas(vault, "语言.canvas", canvas(question, answer))
    assert canvas_language(load_canvas(path)) == language


def test_labels_come_from_the_blueprint_title_then_english_then_the_id() -> None:
    titled = parse_blueprint("---\nname: a\ntitle: {zh: 甲, en: Alpha}\n---\nx")
    english = parse_blueprint("---\nname: b\ntitle: Beta\n---\nx")
    bare = parse_blueprint("---\nname: c\n---\nx")
    assert edge_labels("zh", [titled, english, bare])["a"] == "甲"
    assert {k: v for k, v in edge_labels("zh", [titled, english, bare]).items() if len(k) == 1} == {
        "a": "甲",
        "b": "Beta",
        "c": "c",
    }
    assert edge_labels("de", [titled])["a"] == "Alpha"
    labels = edge_labels("zh", [])
    assert labels["explanations"] == "学习笔记"
    assert edge_labels("en", [])["score-summary"] == "Score summary"
    for bp in builtin_blueprints().values():  # every built-in agent has zh and en names
        assert bp.title.keys() >= {"zh", "en"}, bp.name


def test_a_run_labels_edges_in_the_canvas_language_and_notes_link_back(vault: Path) -> None:
    answer = "我觉得幂集就是集合里元素的个数。\n第二行不引用。"
    zh = write_canvas(vault / "课程", "离散 数学.canvas", canvas("什么是幂集？", answer))
    en = write_canvas(vault, "sets.canvas", canvas("What is a power set?", "All subsets."))
    agents = ["memory-anchor", "oral-explanation"]
    for path, expected in (
        (zh, {"记忆锚点", "口语化解释"}),
        (en, {"Memory anchor", "Oral explanation"}),
    ):
        job = plan_canvas(path, builtin_blueprints(), agents=agents)
        _, report = asyncio.run(run_job(job))
        labels = {e.label for e in load_canvas(path).edges if e.from_node == "y"}
        assert labels == expected
        for note in report.notes:
            text = note.path.read_text(encoding="utf-8")
            link = path.relative_to(vault).as_posix()
            first = (answer if path == zh else "All subsets.").splitlines()[0]
            assert text.startswith(f"[[{link}]]\n\n> {first}\n\n")
            assert "第二行不引用" not in text
