"""Names from hostile text stay one safe file name inside the vault; our ids are stable."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fanout.canvas import NoteResult, WriteOptions, is_our_id, node_id_for, write_results
from fanout.canvas.naming import (
    MAX_NAME_BYTES,
    edge_id_for,
    folder_component,
    note_file_name,
    safe_component,
    short_id_for,
)
from fanout.errors import ConfigError

from .support import note_body, read_json, write_canvas

HOSTILE = [
    "../../../../etc/passwd",
    "/etc/passwd",
    "..\\..\\Windows\\System32\\config",
    "C:\\Windows\\win.ini",
    "a\x00b",
    "\x00",
    "x" * 300,
    "逆" * 300,
    "😀🎉🔥 emoji 才是 😈",
    "CON",
    "nul",
    "COM1",
    "lpt9.txt",
    "AUX.md",
    "尾随点...",
    "尾随空格   ",
    " . ",
    "..",
    ".",
    ".obsidian",
    "~/.ssh/id_rsa",
    "$(rm -rf /)",
    "a\nb\r\tc",
    "\u202eevil\u202dgpj.exe",
    'bad<>:"|?*name',
    "",
]
RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10))}
RESERVED |= {f"lpt{i}" for i in range(1, 10)}


def assert_safe_name(name: str) -> None:
    assert name
    assert "/" not in name
    assert "\\" not in name
    assert not name.startswith((".", "-", " "))
    assert not name.endswith((" ", "."))
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES
    assert all(unicodedata.category(c)[0] not in "CZ" for c in name)  # no controls, spaces
    assert not any(c in '<>:"|?*' for c in name)
    assert name.split(".")[0].casefold() not in RESERVED
    assert name.count(".") <= 1


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_and_agent_names_make_safe_file_names(text: str) -> None:
    short = short_id_for("n1", text)
    names = (note_file_name(text, text, short), note_file_name("oral-explanation", text, short))
    for name in names:
        assert_safe_name(name)
        assert name.endswith(f"-{short}.md")
    assert_safe_name(safe_component(text))


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400), st.text(max_size=80))
def test_any_text_makes_a_safe_file_name(text: str, agent: str) -> None:
    assert_safe_name(note_file_name(agent, text, short_id_for("t", agent)))


def test_names_read_well() -> None:
    name = note_file_name("oral-explanation", "# 什么是逆否命题？\n详细……", "1a2b3c4d")
    assert name == "oral-explanation-什么是逆否命题-1a2b3c4d.md"
    assert note_file_name("memory-anchor", "", "1a2b3c4d") == "memory-anchor-1a2b3c4d.md"
    assert note_file_name("a", "b", "1a2b3c4d", attempt=3) == "a-b-1a2b3c4d-3.md"


def test_ids_are_stable_and_ours() -> None:
    assert node_id_for("y1", "oral-explanation") == node_id_for("y1", "oral-explanation")
    ids = {node_id_for(t, a) for t in ("y1", "y2") for a in ("a", "b")}
    assert len(ids) == 4
    assert node_id_for("y1", "a", "实验") != node_id_for("y1", "a")
    assert is_our_id(node_id_for("y1", "a"))
    assert is_our_id(edge_id_for("y1", "a"))
    assert not is_our_id("fanout-notes")
    assert not is_our_id(node_id_for("y1", "a"), "other")
    assert not is_our_id("9f86d081884c7d65")


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_notes_are_written_inside_the_vault(vault: Path, text: str) -> None:
    node = {"id": text or "空", "type": "text", "text": text or "空", "x": 0, "y": 0}
    node |= {"width": 300, "height": 100, "color": "3"}
    path = write_canvas(vault / "课程", "危险.canvas", {"nodes": [node], "edges": []})
    result = NoteResult(node["id"], text or "agent", f"解释：{text}")
    report = write_results(path, [result])
    (written,) = report.notes
    real_vault = os.path.realpath(vault)
    assert os.path.realpath(written.path).startswith(real_vault + os.sep)
    assert written.path.parent == vault / "课程" / "危险-explanations"
    assert note_body(written.path.read_bytes().decode("utf-8")) == f"解释：{text}"
    files = {n["file"] for n in read_json(path)["nodes"] if n.get("type") == "file"}
    assert files == {written.vault_path}
    outside = [p for p in vault.parent.rglob("*") if not str(p).startswith(str(vault))]
    assert all(p.is_relative_to(vault.parent / "数据目录") for p in outside)


def test_a_notes_dir_outside_the_vault_is_refused(vault: Path) -> None:
    node = {"id": "y", "type": "text", "text": "理解", "x": 0, "y": 0, "width": 1, "height": 1}
    path = write_canvas(vault, "白板.canvas", {"nodes": [node]})
    before = path.read_bytes()
    for bad in ("../外面", "/tmp/外面", "a/../../外面"):
        with pytest.raises(ConfigError, match="not inside the vault"):
            write_results(path, [NoteResult("y", "a", "x")], WriteOptions(notes_dir=bad))
    assert path.read_bytes() == before
    assert not (vault.parent / "外面").exists()


@pytest.mark.parametrize(
    ("stem", "folder"),
    [
        ("离散 数学", "离散 数学"),
        ("v1.2 复习", "v1.2 复习"),
        ("a/b\\c", "a-b-c"),
        ("..", "canvas"),
        (" .隐藏. ", "隐藏"),
        ("CON", "_CON"),
        ('问<>:"|?*题', "问-题"),
        ("换\n行", "换-行"),
    ],
)
def test_the_notes_folder_keeps_the_canvas_name_as_written(stem: str, folder: str) -> None:
    assert folder_component(stem) == folder
