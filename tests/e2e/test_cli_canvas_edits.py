"""`fanout canvas run` respects what the learner deleted; `fanout canvas restore` undoes a
whole run and `--list` names the runs (issue 12 point 5, issue 11 point 12)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.test_cli_batch import fanout
from tests.e2e.test_cli_canvas_vault import home, make_vault, run, study, write

pytestmark = pytest.mark.e2e


def test_a_deleted_note_stays_deleted_and_restore_undoes_the_run(tmp_path: Path) -> None:
    path = write(make_vault(tmp_path) / "离散 数学.canvas", study())
    original = path.read_bytes()
    p = run(path, tmp_path, "--agents", "memory-anchor,oral-explanation")
    assert p.returncode == 0, p.stderr
    first = json.loads(p.stdout.strip().splitlines()[-1])
    assert first["nodes_added"] == 2
    data = json.loads(path.read_text(encoding="utf-8"))
    (gone,) = [n for n in data["nodes"] if n.get("type") == "file" and "记忆" not in n["file"]][:1]
    data["nodes"].remove(gone)
    data["edges"] = [e for e in data["edges"] if e["toNode"] != gone["id"]]
    path.write_text(json.dumps(data, ensure_ascii=False, indent="\t"), encoding="utf-8")
    edited = path.read_bytes()
    p = fanout(
        "canvas", "run", path, "--agents", "memory-anchor,oral-explanation", "--sim-latency",
        "1ms", "--no-cache", env=home(tmp_path),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "1 notes you deleted from the canvas were left out" in p.stdout
    assert path.read_bytes() == edited  # nothing put back
    listed = fanout("canvas", "restore", path, "--list", env=home(tmp_path))
    assert listed.returncode == 0, listed.stderr
    assert first["run_id"] in listed.stdout
    assert " UTC  r-" in listed.stdout
    p = fanout("canvas", "restore", path, "--run", first["run_id"], env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert f"as before run {first['run_id']}" in p.stdout
    assert path.read_bytes() == original
    p = run(path, tmp_path, "--agents", "memory-anchor,oral-explanation")
    assert json.loads(p.stdout.strip().splitlines()[-1])["nodes_added"] == 2
