"""The canvas write where the file system cannot swap files atomically (no renameat2
RENAME_EXCHANGE: older kernels, some network and FUSE file systems): the write still lands,
an edit saved before our last check is still merged, and the lost guarantee is said once,
not dropped silently."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from fanout.canvas import NoteResult, is_our_id, safefile, write_results, writeback

from .support import read_json, study_canvas, write_canvas


@pytest.fixture(params=["exchange", "no-exchange", "kernel-refuses"])
def exchange_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(safefile, "_said_no_exchange", False)
    monkeypatch.setattr(safefile, "_exchange_ok", safefile._exchange_ok)
    if request.param == "no-exchange":
        monkeypatch.setattr(safefile, "_exchange_ok", False)
    elif request.param == "kernel-refuses":
        # the real renameat2 call, answered EINVAL by the kernel (EXCHANGE with NOREPLACE
        # is refused everywhere), as a file system without the exchange answers: the
        # errno path and the fallback to os.replace run for real, not skipped
        monkeypatch.setattr(safefile, "_RENAME_EXCHANGE", 2 | 1)
    return str(request.param)


def test_an_edit_saved_before_the_swap_is_kept_with_or_without_exchange(
    vault: Path,
    exchange_mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write_canvas(vault / "课程", "交换.canvas", study_canvas())
    edits = 0

    def editor_saves(p: Path, new: bytes) -> None:  # another program, just before our swap
        nonlocal edits
        if edits:
            return
        edits += 1
        data = json.loads(p.read_text(encoding="utf-8"))
        data["nodes"].append(
            {"id": "编辑器", "type": "text", "text": "刚保存的", "x": -900, "y": 0,
             "width": 200, "height": 80}
        )  # fmt: skip
        p.write_text(json.dumps(data, ensure_ascii=False, indent="\t"), encoding="utf-8")

    monkeypatch.setattr(writeback, "_before_swap", editor_saves)
    with caplog.at_level(logging.WARNING, logger="fanout.canvas.safefile"):
        report = write_results(path, [NoteResult("y1", "代理", "解释。" * 30)])
        write_results(path, [NoteResult("y1", "代理二", "解释。" * 30)])
    ids = [n["id"] for n in read_json(path)["nodes"]]
    assert "编辑器" in ids  # the editor's save was merged, not overwritten
    assert sum(1 for i in ids if is_our_id(i)) == 2
    assert report.merges == 2  # it was seen, and we merged onto it
    said = [r.getMessage() for r in caplog.records if "renameat2" in r.getMessage()]
    if exchange_mode == "exchange":
        assert said == []
    else:
        assert len(said) == 1  # once, not at every write
        assert said[0].startswith(f"fanout: {path}: this file system cannot swap files")
