"""The learner's edits win (issue 12 point 5), and a restore undoes a whole run (issue 11
point 12): what fanout wrote is remembered per canvas, a deleted note or edge stays
deleted, backups are named by run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanout.canvas import NoteResult, WriteOptions, list_backups, restore, write_results
from fanout.canvas.safefile import backup_run, read_written

from .support import read_json, study_canvas, write_canvas


def results(tag: str = "") -> list[NoteResult]:
    return [
        NoteResult("y1", "oral-explanation", f"口语化解释{tag}"),
        NoteResult("y1", "memory-anchor", f"记忆锚点{tag}"),
    ]


def drop(path: Path, *, node: str | None = None, edge: str | None = None) -> None:
    """What Obsidian does when the learner deletes a node (and its edges) or an edge."""
    data: dict[str, Any] = read_json(path)
    if node is not None:
        data["nodes"] = [n for n in data["nodes"] if n["id"] != node]
        data["edges"] = [e for e in data["edges"] if node not in (e["fromNode"], e["toNode"])]
    if edge is not None:
        data["edges"] = [e for e in data["edges"] if e["id"] != edge]
    path.write_text(json.dumps(data, ensure_ascii=False, indent="\t"), encoding="utf-8")


def test_a_deleted_note_node_is_not_recreated_unless_asked(vault: Path) -> None:
    path = write_canvas(vault / "课程", "离散数学.canvas", study_canvas())
    first = write_results(path, results())
    oral = first.notes[0]
    assert read_written(path)[0] == {n.node_id for n in first.notes}
    drop(path, node=oral.node_id)
    again = write_results(path, results("（新）"))
    assert [(s.agent, s.deleted) for s in again.skipped] == [("oral-explanation", True)]
    assert "--restore-deleted" in again.skipped[0].reason
    ids = {n["id"] for n in read_json(path)["nodes"]}
    assert oral.node_id not in ids
    assert [n.agent for n in again.notes] == ["memory-anchor"]
    assert again.notes[0].note == "updated"
    back = write_results(path, results(), WriteOptions(restore_deleted=True))
    assert back.skipped == []
    assert oral.node_id in {n["id"] for n in read_json(path)["nodes"]}
    assert oral.edge_id in {e["id"] for e in read_json(path)["edges"]}


def test_a_deleted_edge_stays_deleted_and_its_note_is_still_updated(vault: Path) -> None:
    path = write_canvas(vault / "课程", "离散数学.canvas", study_canvas())
    first = write_results(path, results())
    anchor = first.notes[1]
    drop(path, edge=anchor.edge_id)
    again = write_results(path, results("（二）"))
    assert again.skipped == []
    assert [(n.agent, n.node, n.edge) for n in again.notes] == [
        ("oral-explanation", "kept", "kept"),
        ("memory-anchor", "kept", "deleted"),
    ]
    assert anchor.edge_id not in {e["id"] for e in read_json(path)["edges"]}
    assert anchor.path.read_text(encoding="utf-8").endswith("记忆锚点（二）")
    write_results(path, results(), WriteOptions(restore_deleted=True))
    assert anchor.edge_id in {e["id"] for e in read_json(path)["edges"]}


def test_restore_undoes_every_write_of_the_latest_run(vault: Path) -> None:
    path = write_canvas(vault / "课程", "离散数学.canvas", study_canvas())
    original = path.read_bytes()
    run = WriteOptions(run_id="r-甲")
    for i, result in enumerate(results()):  # a run writing three times, as --smart does
        write_results(path, [result], run)
        write_results(path, [NoteResult("y1", f"agent-{i}", "又一个")], run)
    runs = [backup_run(b) for b in list_backups(path)]
    assert runs == ["r-甲"] * 4
    restore(path)
    assert path.read_bytes() == original
    # a restore is itself undone by the next one, and forgets what the run wrote: a rerun
    # writes the notes again instead of taking them for deleted ones
    assert read_written(path) == (set(), set())
    again = write_results(path, results(), WriteOptions(run_id="r-乙"))
    assert again.skipped == []
    assert len(again.notes) == 2


def test_restore_by_run_id_and_old_runs_keep_their_first_backup(vault: Path) -> None:
    path = write_canvas(vault / "课程", "离散数学.canvas", study_canvas())
    original = path.read_bytes()
    keep = 2
    for i in range(5):  # one run writing five times, more than `keep` backups
        opts = WriteOptions(run_id="r-one", keep_backups=keep)
        write_results(path, [NoteResult("y1", f"agent-{i}", "文")], opts)
    after_one = path.read_bytes()
    write_results(
        path, [NoteResult("y1", "late", "文")], WriteOptions(run_id="r-two", keep_backups=keep)
    )
    names = [backup_run(b) for b in list_backups(path)]
    assert names[0] == "r-one"  # the first backup of r-one survived the pruning
    assert names.count("r-two") == 1
    restore(path, run_id="r-tw")  # a unique prefix
    assert path.read_bytes() == after_one
    restore(path, run_id="r-one")
    assert path.read_bytes() == original
