"""Generated canvases (every node type, unknown keys everywhere, Chinese text, malformed and
dangling entries) round-trip, and keep all their content through a write-back and a rerun."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fanout.canvas import NoteResult, dumps_canvas, load_canvas, parse_canvas, write_results

from .canvas_text import strict
from .strategies import canvases
from .support import assert_kept, assert_no_overlap, note_body, read_json


def encode(data: dict[str, Any], indent: str | None) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate can only be written as an escape
        text = json.dumps(data, indent=indent)
    return text


# generating the canvases is slow on a loaded machine: that is not what this test checks
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canvases(), st.sampled_from(["\t", "  ", None]))
def test_generated_canvases_round_trip(data: dict[str, Any], indent: str | None) -> None:
    text = encode(data, indent)
    canvas = parse_canvas(text, path="生成.canvas")
    out = dumps_canvas(canvas)
    assert out == text  # byte for byte: nothing was changed, so nothing is rewritten
    assert strict(json.loads(out)) == strict(data)  # `true` is not `1`, `1` not `1.0`
    # written whole (as for a canvas made in memory), only the layout may differ
    whole = dumps_canvas(type(canvas)(canvas.data, style=type(canvas.style)(indent=indent)))
    assert strict(json.loads(whole)) == strict(data)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(canvases(), st.data())
def test_generated_canvases_keep_everything_through_a_write_back(
    data: dict[str, Any], pick: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vault = Path(tmp) / "知识库"
        (vault / ".obsidian").mkdir(parents=True)
        path = vault / "生成的白板.canvas"
        original = encode(data, "\t").encode("utf-8")
        path.write_bytes(original)
        usable = [n.id for n in load_canvas(path).nodes if n.valid and n.id]
        chosen = pick.draw(
            st.lists(st.sampled_from(usable), min_size=1, unique=True) if usable else st.just([])
        )
        agents = pick.draw(st.lists(st.sampled_from(["口语解释", "memory-anchor", "😀"]),
                                    min_size=1, max_size=2, unique=True))  # fmt: skip
        results = [NoteResult(t, a, f"{a}：关于 {t!a} 的解释\n\n" + "详" * 50) for t in chosen
                   for a in agents]  # fmt: skip
        event(f"results: {min(len(results), 5)}+" if results else "results: 0")
        report = write_results(path, results)
        after = read_json(path)
        assert_kept(data, after)
        assert len(report.notes) == len(results)
        assert_no_overlap(path, [(n.node_id, n.target_id) for n in report.notes])
        for note, result in zip(report.notes, results, strict=True):
            assert note_body(note.path.read_bytes().decode("utf-8")) == result.text
            assert note.path.resolve().is_relative_to(vault.resolve())
        written = path.read_bytes()
        if not results:
            assert written == original
        again = write_results(path, results)
        assert not again.changed
        assert path.read_bytes() == written
