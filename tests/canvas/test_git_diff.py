"""In a vault kept under git, a run shows as added lines: `git diff` of the canvas after
`fanout canvas run` holds the new nodes and edges, and at most the two lines that get a
comma (the last node, the last edge) — for Obsidian's own layout, CRLF and a BOM too."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_input_refusals import ROOT, fanout

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

EXAMPLE = ROOT / "examples" / "vault"


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=学习者", "-c", "user.email=l@example.invalid", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout


@pytest.mark.parametrize("variant", ["obsidian", "crlf+bom"])
def test_a_run_adds_lines_and_changes_at_most_two(variant: str, tmp_path: Path) -> None:
    vault = tmp_path / "我的 笔记库"
    shutil.copytree(EXAMPLE, vault)
    (vault / ".obsidian").mkdir(exist_ok=True)
    path = vault / "离散数学.canvas"
    raw = path.read_bytes()
    assert raw.count(b"\n") < 60, "the example is in Obsidian's one-node-per-line layout"
    if variant == "crlf+bom":
        path.write_bytes(b"\xef\xbb\xbf" + raw.replace(b"\n", b"\r\n"))
    git(vault, "init", "-q")
    git(vault, "add", "-A")
    git(vault, "commit", "-qm", "学习笔记")
    p = fanout(
        "canvas",
        "run",
        path,
        "--agents",
        "oral-explanation,memory-anchor",
        "--sim-latency",
        "1ms",
        "--no-progress",
        home=tmp_path / "home",
    )
    assert p.returncode == 0, p.stderr
    numstat = git(vault, "-c", "core.quotepath=off", "diff", "--numstat", "--", path.name)
    added, removed, name = numstat.split("\t")
    assert name.strip() == path.name
    assert int(added) >= 16  # 8 notes: a node and an edge each
    assert int(removed) <= 2, git(vault, "diff", "--", path.name)
    # each removed line comes back with a comma after it, nothing else
    diff = git(vault, "diff", "-U0", "--", path.name)
    minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
    plus = [ln[1:] for ln in diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    for line in minus:
        assert line.rstrip("\r") + "," + ("\r" if line.endswith("\r") else "") in plus
    new_nodes = [ln for ln in plus if re.match(r'\s*\{"id":"fanout-', ln)]
    assert len(new_nodes) == 16  # one line per node and per edge, as Obsidian writes them
    text = path.read_bytes()
    assert text.startswith(b"\xef\xbb\xbf") == (variant == "crlf+bom")
    if variant == "crlf+bom":
        assert text.count(b"\n") == text.count(b"\r\n")
