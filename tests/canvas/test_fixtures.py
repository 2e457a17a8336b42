"""The original system's real canvases: each loads and keeps everything through a write-back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fanout.canvas import (
    ORIGINAL_SYSTEM_YELLOW,
    ORIGINAL_VERDICT_COLOURS,
    NoteResult,
    WriteOptions,
    find_targets,
    load_canvas,
    write_results,
)

from .canvas_text import insertions
from .support import (
    FIXTURES,
    SHARED_FIXTURES,
    assert_kept,
    assert_no_overlap,
    note_body,
    read_json,
)

CANVASES = sorted(FIXTURES.glob("*.canvas"))
AGENTS = ("oral-explanation", "memory-anchor", "scoring-agent")


def test_the_copies_match_the_shared_originals() -> None:
    assert len(CANVASES) == 15
    if not SHARED_FIXTURES.is_dir():
        pytest.skip("../shared/fixtures is not beside this checkout")
    shared = sorted(SHARED_FIXTURES.glob("*.canvas"))
    assert [p.name for p in shared] == [p.name for p in CANVASES]
    for ours, theirs in zip(CANVASES, shared, strict=True):
        assert ours.read_bytes() == theirs.read_bytes(), ours.name


@pytest.mark.parametrize("fixture", CANVASES, ids=[p.stem for p in CANVASES])
def test_every_fixture_keeps_all_its_content_through_a_write_back(
    fixture: Path, vault: Path
) -> None:
    path = vault / fixture.name
    shutil.copyfile(fixture, path)
    raw = path.read_bytes()
    before = read_json(path)
    selection = find_targets(load_canvas(path), colour=ORIGINAL_SYSTEM_YELLOW)
    bad_ids = {w.node_id for w in selection.warnings if w.node_id}
    assert not bad_ids & {t.node_id for t in selection}
    results = [
        NoteResult(t.node_id, agent, f"{agent} 对「{t.text[:20]}」的解释", verdict=None)
        for t in selection
        for agent in AGENTS
    ]
    report = write_results(path, results)
    after = read_json(path)
    assert_kept(before, after)
    assert len(after.get("nodes", [])) == len(before.get("nodes", [])) + len(results)
    assert len(report.notes) == len(results)
    assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
    for note in report.notes:
        assert note_body(note.path.read_bytes().decode()) == next(
            r.text for r in results if (r.target_id, r.agent) == (note.target_id, note.agent)
        )
    written = path.read_bytes()
    # the file's own bytes stay: the write only inserted the new nodes and edges
    assert insertions(raw.decode(), written.decode()) is not None
    rerun = write_results(path, results)
    assert not rerun.changed
    assert path.read_bytes() == written


def test_the_known_oddities_are_kept_and_never_targets(vault: Path) -> None:
    perf = load_canvas(FIXTURES / "perf_test_0.canvas")
    assert [w.code for w in perf.warnings] == ["missing-field"]
    assert find_targets(perf, colour="1").targets == []
    basic = load_canvas(FIXTURES / "test-basic.canvas")
    assert [w.code for w in basic.warnings] == ["dangling-edge"]
    assert "node-test789" in basic.warnings[0].message
    empty = load_canvas(FIXTURES / "test-missing-fields.canvas")
    assert empty.nodes == []
    assert empty.data == {"someOtherField": "value"}


def test_the_scoring_canvas_with_the_original_palette(vault: Path) -> None:
    path = vault / "test-embedded-scoring.canvas"
    shutil.copyfile(FIXTURES / path.name, path)
    selection = find_targets(load_canvas(path), colour="6")
    assert [t.node_id for t in selection] == ["yellow-filled", "yellow-green"]
    assert [s.node_id for s in selection.skipped] == ["yellow-empty"]
    filled = selection.targets[0]
    assert filled.question == "什么是逆否命题？"
    assert filled.materials[0].node_id == "material-node-1"
    verdicts = {"yellow-filled": "mastered", "yellow-green": "not_understood"}
    scored = [NoteResult(t, "scoring-agent", f"评分：{v}", verdict=v) for t, v in verdicts.items()]
    report = write_results(path, scored, WriteOptions(recolour=ORIGINAL_VERDICT_COLOURS))
    assert sorted(report.recoloured) == [
        ("question-already-scored-green", "1"),
        ("question-unscored", "2"),
    ]
