"""The canvas renderer of bench/ draws what is there: nodes in their colours, our notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benches import bench_module

pytest.importorskip("matplotlib")  # the `dev` extra


def test_a_canvas_with_chinese_text_and_our_notes_is_drawn(tmp_path: Path) -> None:
    from matplotlib import image

    render = bench_module("canvas_render")
    corpus = bench_module("canvas_corpus")
    data = corpus.generate(7, ["两个节点"])["两个节点"]
    data["nodes"].append(
        {"id": "fanout-0123456789abcdef", "type": "file", "file": "笔记/解释.md", "x": 290,
         "y": 120, "width": 250, "height": 60, "color": "5"}
    )  # fmt: skip
    out = tmp_path / "画布.png"
    render.render(data, out, title="两个节点")
    pixels = image.imread(out)
    assert pixels.shape[0] > 50
    assert pixels.shape[1] > 50
    rgb = (pixels[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in rgb}
    # our note's outline is drawn in blue (#1a73e8), the yellow target filled
    assert any(r < 140 and g < 190 and b > 200 for r, g, b in colours)
    assert any(r > 200 and g > 200 and b < 190 for r, g, b in colours)


def test_a_file_that_is_not_a_canvas_is_refused_in_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "坏.canvas"
    bad.write_text("{不是 JSON", encoding="utf-8")
    script = Path(__file__).resolve().parents[2] / "bench" / "canvas_render.py"
    proc = subprocess.run(
        [sys.executable, str(script), str(bad), str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "give a .canvas file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.png").exists()
