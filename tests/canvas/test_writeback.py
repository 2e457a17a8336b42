"""Write-back: notes + nodes + edges, reruns update, concurrent edits merge, backups restore."""

from __future__ import annotations

import asyncio
import errno
import json
import sys
import threading
from pathlib import Path

import pytest

from fanout.canvas import (
    ORIGINAL_VERDICT_COLOURS,
    CanvasWriteError,
    NoteResult,
    WriteOptions,
    canvas_lock,
    list_backups,
    load_canvas,
    node_id_for,
    restore,
    write_results,
    write_results_async,
)
from fanout.canvas import writeback as wb
from fanout.canvas.safefile import written_path
from fanout.errors import InputError

from .canvas_text import strict
from .support import assert_kept, note_body, read_json, study_canvas, write_canvas

ORAL = "逆否命题就像镜子里的自己：把“如果下雨，地就湿”倒过来再否定……" * 40  # ~1.4k chars


@pytest.fixture
def canvas(vault: Path) -> Path:
    return write_canvas(vault / "课程", "离散数学.canvas", study_canvas())


def results(text: str = ORAL) -> list[NoteResult]:
    return [
        NoteResult("y1", "oral-explanation", text),
        NoteResult("y1", "memory-anchor", "记忆锚点：镜子 ↔ 逆否", title="记忆锚点"),
        NoteResult("q1", "comparison-table", "| 命题 | 形式 |\n|---|---|\n| 原 | p→q |"),
    ]


def test_results_become_notes_file_nodes_and_labelled_edges(canvas: Path, vault: Path) -> None:
    before = read_json(canvas)
    report = wb.write_results(canvas, results())
    after = read_json(canvas)
    assert_kept(before, after)
    added, edges = after["nodes"][len(before["nodes"]) :], after["edges"][len(before["edges"]) :]
    assert [n["id"] for n in added] == [n.node_id for n in report.notes]
    assert all(n["type"] == "file" for n in added)
    assert all(n["color"] == "5" for n in added)
    assert [(e["fromNode"], e["toNode"], e["label"]) for e in edges] == [
        (n.target_id, n.node_id, n.agent) for n in report.notes
    ]
    folder = vault / "课程" / "离散数学-explanations"
    assert sorted(p.name for p in folder.iterdir()) == sorted(n.path.name for n in report.notes)
    assert [n.vault_path.split("/")[0] for n in report.notes] == ["课程"] * 3
    texts = [note_body(n.path.read_bytes().decode()) for n in report.notes]
    assert texts == [ORAL, "# 记忆锚点\n\n记忆锚点：镜子 ↔ 逆否", results()[2].text]  # whole
    assert report.changed
    assert report.backup is not None
    assert (
        report.backup.read_bytes() == json.dumps(before, ensure_ascii=False, indent="\t").encode()
    )
    assert report.merges == 1
    assert {n.note for n in report.notes} == {"created"}


def test_a_rerun_adds_nothing_and_updates_notes_in_place(canvas: Path, vault: Path) -> None:
    first = write_results(canvas, results())
    snapshot = canvas.read_bytes()
    again = write_results(canvas, results())
    assert canvas.read_bytes() == snapshot
    assert not again.changed
    assert {n.note for n in again.notes} == {"unchanged"}
    assert {(n.node, n.edge) for n in again.notes} == {("kept", "kept")}
    changed = write_results(canvas, results("第二版：更短的解释"))
    assert canvas.read_bytes() == snapshot  # same nodes, same edges, same file names
    assert [n.note for n in changed.notes] == ["updated", "unchanged", "unchanged"]
    assert note_body(first.notes[0].path.read_text(encoding="utf-8")) == "第二版：更短的解释"
    assert len(list((vault / "课程" / "离散数学-explanations").iterdir())) == 3


def test_the_learners_edits_to_our_nodes_survive_a_rerun(canvas: Path) -> None:
    write_results(canvas, results())
    data = read_json(canvas)
    data["nodes"][-1] |= {"x": 9999, "color": "2", "学习者备注": "挪过"}
    data["edges"][-1]["label"] = "我改的标签"
    write_canvas(canvas.parent, canvas.name, data)
    write_results(canvas, results("新文本"))
    assert strict(read_json(canvas)) == strict(data)


def test_a_moved_note_is_updated_where_it_now_is(canvas: Path, vault: Path) -> None:
    report = write_results(canvas, results())
    moved = vault / "归档" / "口语解释.md"
    moved.parent.mkdir()
    report.notes[0].path.rename(moved)
    data = read_json(canvas)
    node = next(n for n in data["nodes"] if n["id"] == report.notes[0].node_id)
    node["file"] = "归档/口语解释.md"  # what Obsidian does when a note is moved
    write_canvas(canvas.parent, canvas.name, data)
    again = write_results(canvas, results("移动后的新内容"))
    assert note_body(moved.read_text(encoding="utf-8")) == "移动后的新内容"
    assert again.notes[0].path == moved
    assert not report.notes[0].path.exists()


def test_a_note_left_by_a_killed_run_is_reused_not_copied(canvas: Path) -> None:
    report = write_results(canvas, results())
    # as a run killed between its notes and its canvas write leaves things: the notes, a
    # canvas without our nodes, and no record of having written them (else: deleted)
    write_canvas(canvas.parent, canvas.name, study_canvas())
    written_path(canvas).unlink()
    again = write_results(canvas, results())
    assert [n.path for n in again.notes] == [n.path for n in report.notes]
    assert len(list(report.notes[0].path.parent.iterdir())) == 3


def test_options_colour_folder_size_and_namespace(canvas: Path, vault: Path) -> None:
    opts = WriteOptions(node_colour=None, notes_dir="AI 解释/离散", node_size=(300, 200))
    report = write_results(canvas, results()[:1], opts)
    node = read_json(canvas)["nodes"][-1]
    assert "color" not in node
    assert (node["width"], node["height"]) == (300, 200)
    assert report.notes[0].path.parent == vault / "AI 解释" / "离散"
    other = write_results(canvas, results()[:1], WriteOptions(namespace="实验"))
    assert other.notes[0].node_id != report.notes[0].node_id
    assert other.notes[0].node_id.startswith("实验-")


def test_recolouring_by_verdict_is_off_by_default(canvas: Path) -> None:
    scored = NoteResult("y1", "scoring-agent", "总分 62：部分理解", verdict="partial")
    write_results(canvas, [scored])
    assert read_json(canvas)["nodes"][2]["color"] == "1"
    report = write_results(canvas, [scored], WriteOptions(recolour=ORIGINAL_VERDICT_COLOURS))
    assert report.recoloured == [("q1", "3")]
    nodes = read_json(canvas)["nodes"]
    assert nodes[2]["color"] == "3"
    assert nodes[1]["color"] == "2"  # material, two hops away, untouched


def test_a_result_for_a_node_that_is_gone_is_skipped(canvas: Path) -> None:
    report = write_results(canvas, [*results(), NoteResult("不见了", "oral-explanation", "x")])
    assert [(s.target_id, "no longer" in s.reason) for s in report.skipped] == [("不见了", True)]
    assert len(report.notes) == 3


def test_a_bad_canvas_writes_nothing(vault: Path, fanout_home: Path) -> None:
    path = vault / "坏.canvas"
    path.write_text('{"nodes": [{"id": "a"}, {"id": "a"}]}', encoding="utf-8")
    with pytest.raises(InputError, match="'a'"):
        write_results(path, [NoteResult("a", "oral-explanation", "x")])
    assert sorted(p.name for p in vault.iterdir()) == [".obsidian", "坏.canvas"]
    assert not fanout_home.exists()


def test_the_canvas_changed_before_the_swap_is_merged_again(
    canvas: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def obsidian_edits(path: Path, new: bytes) -> None:
        if not calls:
            data = read_json(path)
            data["nodes"].append(
                {
                    "id": "新",
                    "type": "text",
                    "text": "学习者刚加的",
                    "x": 0,
                    "y": 5000,
                    "width": 100,
                    "height": 100,
                }
            )
            write_canvas(path.parent, path.name, data)
        calls.append(path)

    monkeypatch.setattr(wb, "_before_swap", obsidian_edits)
    report = write_results(canvas, results())
    assert report.merges == 2
    assert {n.note for n in report.notes} == {"created"}  # not "unchanged" the 2nd time
    ids = [n["id"] for n in read_json(canvas)["nodes"]]
    assert "新" in ids
    assert all(n.node_id in ids for n in report.notes)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs renameat2 exchange")
def test_a_write_that_slips_in_just_before_the_swap_is_handed_back(
    canvas: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_exchange = wb.exchange
    slipped: list[bool] = []

    def someone_writes_then_swap(tmp: Path, path: Path) -> bool:
        if not slipped:  # after our last hash check, just before the swap
            data = read_json(path)
            data["edges"].append({"id": "插队", "fromNode": "m1", "toNode": "y1"})
            write_canvas(path.parent, path.name, data)
            slipped.append(True)
        return real_exchange(tmp, path)

    monkeypatch.setattr(wb, "exchange", someone_writes_then_swap)
    report = write_results(canvas, results())
    edges = [e["id"] for e in read_json(canvas)["edges"]]
    assert "插队" in edges
    assert all(n.edge_id in edges for n in report.notes)
    assert report.merges == 2  # their file was swapped back in and merged onto


def test_a_failing_write_is_retried_then_leaves_everything_as_it_was(
    canvas: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = canvas.read_bytes()
    real = wb.write_temp
    failures = {"left": 2}

    def flaky(path: Path, data: bytes) -> Path:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError(errno.EIO, "I/O error")
        return real(path, data)

    monkeypatch.setattr(wb, "write_temp", flaky)
    assert write_results(canvas, results()).changed  # two failures, third try works
    write_canvas(canvas.parent, canvas.name, study_canvas())
    before = canvas.read_bytes()

    def full(path: Path, data: bytes) -> Path:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(wb, "write_temp", full)
    with pytest.raises(CanvasWriteError, match="No space left"):
        write_results(canvas, [NoteResult("y1", "新代理", "不会留下")])
    assert canvas.read_bytes() == before
    assert not any("新代理" in p.name for p in canvas.parent.rglob("*.md"))
    assert not [p for p in canvas.parent.iterdir() if "fanout-tmp" in p.name]


def test_backups_restore_and_rotate(canvas: Path) -> None:
    original = canvas.read_bytes()
    write_results(canvas, results()[:1])
    after_first = canvas.read_bytes()
    write_results(canvas, results()[1:])
    assert list_backups(canvas)[-1].read_bytes() == after_first
    used = restore(canvas, list_backups(canvas)[0])
    assert canvas.read_bytes() == original
    assert used == list_backups(canvas)[0]
    restore(canvas)  # the newest backup is the canvas as it was before that restore
    assert load_canvas(canvas).node(node_id_for("y1", "memory-anchor")) is not None
    for k in range(6):
        write_results(canvas, [NoteResult("y1", f"代理{k}", "x")], WriteOptions(keep_backups=3))
    assert len(list_backups(canvas)) == 3
    with pytest.raises(InputError, match="no backup"):
        restore(canvas, "不存在.canvas")


def test_restore_without_backups_is_an_input_error(canvas: Path) -> None:
    with pytest.raises(InputError, match="no backups"):
        restore(canvas)


def test_the_lock_holds_across_threads_and_times_out(canvas: Path) -> None:
    entered = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with canvas_lock(canvas):
            entered.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert entered.wait(5)
        with pytest.raises(CanvasWriteError, match="another fanout process"):
            write_results(canvas, results(), WriteOptions(lock_timeout=0.2))
    finally:
        release.set()
        holder.join()
    assert write_results(canvas, results()).changed


def test_the_async_wrapper_runs_in_a_thread(canvas: Path) -> None:
    report = asyncio.run(write_results_async(canvas, results()))
    assert len(report.notes) == 3


def test_a_canvas_without_edges_gets_them_and_keeps_its_own_keys(vault: Path) -> None:
    yellow = study_canvas()["nodes"][3]
    path = write_canvas(vault, "空白.canvas", {"someOtherField": "value", "nodes": [yellow]})
    write_results(path, [NoteResult("y1", "oral-explanation", "解释")])
    data = read_json(path)
    assert list(data) == ["someOtherField", "nodes", "edges"]
    assert data["nodes"][0] == yellow
    assert [e["fromNode"] for e in data["edges"]] == ["y1"]


def test_a_symlinked_canvas_stays_a_symlink(vault: Path, tmp_path: Path) -> None:
    real = write_canvas(tmp_path / "别处", "真身.canvas", study_canvas())
    link = vault / "链接.canvas"
    link.symlink_to(real)
    report = write_results(link, results()[:1])
    assert link.is_symlink()
    assert read_json(real)["nodes"][-1]["id"] == report.notes[0].node_id
    assert report.notes[0].path.parent == vault / "链接-explanations"  # the vault it is in


def test_a_result_that_is_not_unicode_is_skipped(canvas: Path) -> None:
    report = write_results(canvas, [*results()[:1], NoteResult("q1", "坏", "半个\ud800字符")])
    assert [s.agent for s in report.skipped] == ["坏"]
    assert len(report.notes) == 1


def test_a_deleted_edge_of_ours_comes_back_facing_its_node_when_asked(canvas: Path) -> None:
    report = write_results(canvas, results()[:1])
    data = read_json(canvas)
    node = data["nodes"][-1]
    node["x"], node["y"] = -2000, 0  # the learner moved the note to the left
    data["edges"].pop()  # and deleted our edge
    write_canvas(canvas.parent, canvas.name, data)
    kept = write_results(canvas, results()[:1])  # the learner's deletion is respected
    assert [(n.node, n.edge) for n in kept.notes] == [("kept", "deleted")]
    again = write_results(canvas, results()[:1], WriteOptions(restore_deleted=True))
    assert [(n.node, n.edge) for n in again.notes] == [("kept", "added")]
    edge = read_json(canvas)["edges"][-1]
    assert edge["id"] == report.notes[0].edge_id
    assert (edge["fromSide"], edge["toSide"]) == ("left", "right")
