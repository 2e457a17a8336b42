"""`fanout canvas run` and the vault (issue 11's canvas items): notes never leave the vault
the canvas was opened from, bad folders are refused before any call, names follow the
question and the canvas's own name, an id clash never loses a note."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fanout.canvas import load_canvas, node_id_for
from fanout.canvas.vault import resolve_in_vault
from tests.e2e.test_cli_batch import ROOT, fanout

pytestmark = pytest.mark.e2e
AGENT = "memory-anchor"


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def study(extra: list[Any] | None = None) -> dict[str, Any]:
    def text(node_id: str, body: str, y: int, colour: str | None = None) -> dict[str, Any]:
        raw = {"id": node_id, "type": "text", "text": body, "x": 0, "y": y}
        raw.update(width=400, height=200)
        return raw | ({"color": colour} if colour else {})

    return {
        "nodes": [
            text("q", "什么是幂集？", 0),
            text("y", "我以为幂集是集合的元素个数。", 400, "3"),
            *(extra or []),
        ],
        "edges": [{"id": "e", "fromNode": "q", "toNode": "y", "label": "个人理解"}],
    }


def make_vault(tmp_path: Path) -> Path:
    vault = tmp_path / "知识库"
    (vault / ".obsidian").mkdir(parents=True)
    return vault


def write(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent="\t"), encoding="utf-8")
    return path


def run(path: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return fanout(
        "canvas", "run", path, "--agents", AGENT, "--sim-latency", "1ms", "--json", *args,
        env=home(tmp_path),
    )  # fmt: skip


def no_runs(tmp_path: Path) -> bool:
    p = fanout("runs", env=home(tmp_path))
    return p.returncode == 0 and "no runs yet" in p.stdout


def test_a_canvas_symlinked_from_outside_gets_its_notes_inside_the_vault(tmp_path: Path) -> None:
    vault = make_vault(tmp_path)
    real = write(tmp_path / "外面" / "真的.canvas", study())
    link = vault / "课程" / "链接.canvas"
    link.parent.mkdir()
    link.symlink_to(os.path.relpath(real, link.parent))
    p = run(link, tmp_path)
    assert p.returncode == 0, p.stderr
    assert link.is_symlink()  # the link still points at the file outside, now with notes
    assert sorted(x.name for x in (tmp_path / "外面").iterdir()) == ["真的.canvas"]
    notes = [n for n in load_canvas(real).nodes if n.type == "file"]
    assert len(notes) == 1
    note = resolve_in_vault(vault, notes[0].file or "")
    assert note is not None
    assert note.is_file()  # valid from the vault
    assert note.parent == vault / "课程" / "链接-explanations"


def test_notes_dir_outside_the_vault_is_refused_before_any_call(tmp_path: Path) -> None:
    path = write(make_vault(tmp_path) / "离散.canvas", study())
    before = path.read_bytes()
    p = run(path, tmp_path, "--notes-dir", "..")
    assert p.returncode == 2
    assert "not inside the vault" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before
    assert sorted(x.name for x in path.parent.iterdir()) == [".obsidian", "离散.canvas"]
    assert no_runs(tmp_path)


def test_a_read_only_canvas_folder_is_refused_before_any_call(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to make a read-only mount")
    vault = make_vault(tmp_path)
    path = write(vault / "离散.canvas", study())
    before = path.read_bytes()
    # a real read-only file system (a bind mount, remounted ro) in a private mount namespace:
    # file modes alone do not stop root, which the tests may run as
    script = (
        f'mount --bind "{vault}" "{vault}" && mount -o remount,ro,bind "{vault}" "{vault}" '
        f'&& exec "{sys.executable}" -m fanout canvas run "{path}" --agents {AGENT} '
        "--sim-latency 1ms"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")} | home(tmp_path)
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("unshare --mount is not allowed here")
    p = subprocess.run(
        ["unshare", "--mount", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert p.returncode == 2, p.stderr
    assert "cannot write in the canvas's folder" in p.stderr
    assert "Read-only file system" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert path.read_bytes() == before
    assert no_runs(tmp_path)


def test_notes_are_named_from_the_question_in_a_folder_named_as_the_canvas(
    tmp_path: Path,
) -> None:
    path = write(make_vault(tmp_path) / "离散 数学.canvas", study())
    p = run(path, tmp_path)
    assert p.returncode == 0, p.stderr
    (note,) = json.loads(p.stdout.strip().splitlines()[-1])["notes"]
    folder, name = note.split("/")
    assert folder == "离散 数学-explanations"
    assert name.startswith(f"{AGENT}-什么是幂集-")
    assert "我以为" not in name


def test_a_learner_node_with_fanouts_id_does_not_lose_the_note(tmp_path: Path) -> None:
    taken = node_id_for("y", AGENT)
    clash = {"id": taken, "type": "text", "text": "我的节点", "x": 2000, "y": 0}
    clash.update(width=200, height=100)
    path = write(make_vault(tmp_path) / "离散.canvas", study([clash]))
    p = run(path, tmp_path)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["nodes_added"] == 1
    assert out["edges_added"] == 1
    canvas = load_canvas(path)
    learners = canvas.node(taken)
    assert learners is not None
    assert learners.text == "我的节点"
    (ours,) = [n for n in canvas.nodes if n.type == "file"]
    assert ours.id != taken
    (edge,) = [e for e in canvas.edges if e.to_node == ours.id]
    assert edge.from_node == "y"
    again = run(path, tmp_path)  # a rerun finds the same other id: nothing added
    assert again.returncode == 0, again.stderr
    assert load_canvas(path).data == canvas.data
