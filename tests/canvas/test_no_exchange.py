"""The canvas write where the file system cannot swap files atomically (no renameat2
RENAME_EXCHANGE: older kernels, some network and FUSE file systems): the write still lands,
an edit saved before our last check is still merged, and the lost guarantee is said once,
not dropped silently."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.canvas import NoteResult, is_our_id, safefile, write_results, writeback

from .support import read_json, study_canvas, write_canvas


@pytest.fixture(params=["exchange", "no-exchange", "kernel-refuses"])
def exchange_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(safefile, "_said_no_exchange", set())
    monkeypatch.setattr(safefile, "_exchange_ok", safefile._exchange_ok)
    if request.param == "no-exchange":
        monkeypatch.setattr(safefile, "_exchange_ok", False)
    elif request.param == "kernel-refuses":
        # the real renameat2 call, answered EINVAL by the kernel (EXCHANGE with NOREPLACE
        # is refused everywhere), as a file system without the exchange answers: the
        # errno path and the fallback to os.replace run for real, not skipped
        monkeypatch.setattr(safefile, "_RENAME_EXCHANGE", 2 | 1)
    return str(request.param)


def write_twice_with_an_edit_before_the_first_swap(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Two writes of our notes, another program saving the canvas just before the first
    swap; checks the edit and both notes are there and returns what was said of renameat2."""
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
    return [r.getMessage() for r in caplog.records if "renameat2" in r.getMessage()]


def test_an_edit_saved_before_the_swap_is_kept_with_or_without_exchange(
    vault: Path,
    exchange_mode: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write_canvas(vault / "课程", "交换.canvas", study_canvas())
    said = write_twice_with_an_edit_before_the_first_swap(path, monkeypatch, caplog)
    if exchange_mode == "exchange":
        assert said == []
    else:
        assert len(said) == 1  # once, not at every write
        assert said[0].startswith(f"fanout: {path}: this file system cannot swap files")


BINDFS = shutil.which("bindfs")
CAN_FUSE = os.geteuid() == 0 and Path("/dev/fuse").exists() and BINDFS is not None


@contextlib.contextmanager
def fuse_mount(source: Path, where: Path) -> Iterator[Path]:
    """`source` seen through bindfs (FUSE) at `where`: a real file system whose rename
    refuses RENAME_EXCHANGE (EINVAL), as many FUSE and network file systems do."""
    source.mkdir(parents=True, exist_ok=True)
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BINDFS), str(source), str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["fusermount", "-u", str(where)], check=False)
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True)


@pytest.mark.skipif(
    not CAN_FUSE, reason="needs root, /dev/fuse and bindfs (make test installs bindfs)"
)
def test_on_a_real_file_system_without_the_exchange_the_edit_is_kept_and_it_is_said_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(safefile, "_said_no_exchange", set())
    with fuse_mount(tmp_path / "真实", tmp_path / "挂载的知识库") as vault:
        path = write_canvas(vault / "课程", "交换.canvas", study_canvas())
        probe = vault / "a"
        probe.write_bytes(b"a")
        (vault / "b").write_bytes(b"b")
        assert safefile.exchange(probe, vault / "b") is False  # the kernel really refuses
        caplog.clear()
        monkeypatch.setattr(safefile, "_said_no_exchange", set())
        said = write_twice_with_an_edit_before_the_first_swap(path, monkeypatch, caplog)
        assert len(said) == 1  # said, once for this file system, not at every write
        assert said[0].startswith(f"fanout: {path}: this file system cannot swap files")
        assert not list(path.parent.glob("*.tmp*"))  # no temp file left beside the canvas
    # what was written went through to the file system underneath
    assert "编辑器" in (tmp_path / "真实" / "课程" / "交换.canvas").read_text(encoding="utf-8")


def test_a_second_file_system_without_the_exchange_is_said_too(
    vault: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Once per file system, not once per process: the service writes vaults that may sit
    on different file systems, and the second one's user must be told as well."""
    other = Path("/dev/shm")
    if not other.is_dir() or other.stat().st_dev == vault.parent.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    monkeypatch.setattr(safefile, "_said_no_exchange", set())
    monkeypatch.setattr(safefile, "_RENAME_EXCHANGE", 2 | 1)  # the kernel refuses both
    first = write_canvas(vault / "课程", "甲.canvas", study_canvas())
    with tempfile.TemporaryDirectory(dir=other) as shm:
        second = write_canvas(Path(shm) / "知识库", "乙.canvas", study_canvas())
        with caplog.at_level(logging.WARNING, logger="fanout.canvas.safefile"):
            for path in (first, second, first, second):
                write_results(path, [NoteResult("y1", "代理", "解释。" * 30)])
    said = [r.getMessage() for r in caplog.records if "renameat2" in r.getMessage()]
    assert [s.split(":")[1].strip() for s in said] == [str(first), str(second)]
