"""The example vault: realistic study canvases that load, have targets, and take results."""

from __future__ import annotations

import shutil
from pathlib import Path

from fanout.canvas import NoteResult, find_targets, find_vault_root, load_canvas, write_results

from .support import EXAMPLES, assert_kept, read_json


def test_the_example_canvases_are_clean_and_have_targets() -> None:
    found = {}
    for path in sorted(EXAMPLES.glob("*.canvas")):
        canvas = load_canvas(path)
        assert canvas.warnings == [], path.name
        assert find_vault_root(path) == EXAMPLES
        found[path.stem] = find_targets(canvas)
    discrete = found["离散数学"]
    assert len(discrete.targets) == 4
    assert sorted(s.reason.split(":")[0].split(" ")[0] for s in discrete.skipped) == [
        "empty",
        "placeholder",
    ]
    truth_table = next(t for t in discrete if "真值表" in t.question)
    assert "Note 笔记/命题逻辑.md" in truth_table.context  # the file node, read from the vault
    assert "| p | q |" in truth_table.context
    assert truth_table.group_label == "第一章 命题逻辑"
    assert len(found["数据结构"].targets) == 4
    original = found["线性代数-原系统配色"]
    assert original.targets == []
    assert original.hint is not None
    assert original.hint.colour == "6"


def test_the_example_vault_takes_results(tmp_path: Path) -> None:
    vault = tmp_path / "vault"
    shutil.copytree(EXAMPLES, vault)
    path = vault / "离散数学.canvas"
    before = read_json(path)
    targets = find_targets(load_canvas(path)).targets
    agents = ("oral-explanation", "memory-anchor", "comparison-table")
    results = [NoteResult(t.node_id, a, f"## {a}\n\n{t.question}") for t in targets for a in agents]
    report = write_results(path, results)
    assert_kept(before, read_json(path))
    assert {n.path.parent for n in report.notes} == {vault / "离散数学-explanations"}
    assert len(report.notes) == 12
