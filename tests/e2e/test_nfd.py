"""Decomposed (NFD) Unicode, as macOS file systems and some editors produce it: file names
and text come back byte for byte, never normalised, and nothing is lost or doubled."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import pytest

from tests.e2e.test_cli_batch import ROOT, fanout, read_jsonl, write_jsonl

pytestmark = pytest.mark.e2e


def nfd(text: str) -> str:
    out = unicodedata.normalize("NFD", text)
    assert out != text  # the test means decomposed text
    return out


def test_a_batch_with_nfd_names_and_ids_keeps_them_byte_for_byte(tmp_path: Path) -> None:
    folder = tmp_path / nfd("résumé-が")
    folder.mkdir()
    rows = [{"id": nfd(f"café-{i}-が"), "prompt": nfd(f"解释 é と が {i}")} for i in range(5)]
    src = write_jsonl(folder / nfd("入力-é.jsonl"), rows)
    out = folder / nfd("結果-é.jsonl")
    p = fanout("batch", src, "-o", out, "--sim-latency", "1ms", "--no-progress")
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in folder.iterdir()) == sorted([src.name, out.name])
    got = read_jsonl(out)
    assert [r["custom_id"] for r in got] == [r["id"] for r in rows]  # NFD, not recomposed
    assert all(r["error"] is None for r in got)
    again = fanout("batch", src, "-o", out, "--sim-latency", "1ms", "--json")
    assert json.loads(again.stdout.strip().splitlines()[-1])["cached"] == 5  # same keys


def test_a_canvas_with_an_nfd_name_and_text_gets_its_notes(tmp_path: Path) -> None:
    vault = tmp_path / nfd("笔记-é")
    shutil.copytree(ROOT / "examples" / "vault", vault)
    path = vault / nfd("Logique-が.canvas")
    (vault / "离散数学.canvas").rename(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    edited = 0
    for node in data["nodes"]:
        if node.get("color") == "3" and node.get("type") == "text":
            node["text"] = nfd("Réponse : がくせい ") + node["text"]
            edited += 1
    assert edited
    path.write_text(json.dumps(data, ensure_ascii=False, indent="\t"), encoding="utf-8")
    before = path.read_text(encoding="utf-8")
    env = {"FANOUT_HOME": str(tmp_path / "home")}
    p = fanout(
        "canvas", "run", path, "--agents", "memory-anchor", "--json", "--sim-latency", "1ms",
        env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    after = json.loads(path.read_text(encoding="utf-8"))
    texts = [n.get("text") for n in after["nodes"]]
    assert sum(1 for t in texts if t and t.startswith(nfd("Réponse : がくせい "))) == edited
    assert out["nodes_added"] == len(out["notes"]) > 0
    for note in out["notes"]:
        assert (vault / note).is_file()
    # the file's own bytes for what was there are kept: NFD text stays NFD
    assert nfd("Réponse : がくせい ") in path.read_text(encoding="utf-8")
    assert len(path.read_text(encoding="utf-8")) > len(before)
    rerun = fanout(
        "canvas", "run", path, "--agents", "memory-anchor", "--json", "--sim-latency", "1ms",
        env=env,
    )  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.strip().splitlines()[-1])["nodes_added"] == 0
