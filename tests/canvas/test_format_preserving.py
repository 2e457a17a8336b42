"""A write keeps the file's own bytes: for canvases in every layout real vaults use, the
output minus what it appended is the input byte for byte, and it reads back as the input's
elements plus the new ones with JSON types compared strictly (issue 12 point 1)."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from fanout.canvas import NoteResult, dump_bytes, load_canvas, parse_canvas, write_results

from .canvas_text import STYLES, Style, emit, insertions, parsed_piece, strict
from .strategies import TEXT, canvases

NEW_TEXT = st.sampled_from(["逆否命题的解释", "单调性 ✓", "naïve \u2028 行", ""]) | TEXT


@st.composite
def new_nodes(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 3))
    return [
        {
            "id": f"fanout-新-{n}",
            "type": "file",
            "file": f"笔记-explanations/解释 {draw(NEW_TEXT)}.md",
            "x": draw(st.integers(-5000, 5000)),
            "y": draw(st.integers(-5000, 5000)),
            "width": 400,
            "height": 300,
            "color": "5",
        }
        for n in range(count)
    ]


def _as_set(values: list[Any]) -> list[Any]:
    """The elements with their keys in any order, their values' types compared strictly."""
    return sorted(repr(sorted((k, strict(v)) for k, v in e.items())) for e in values)


def _spell(rnd: Any) -> Any:
    return lambda options: rnd.choice(options)


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8").removeprefix("\ufeff")


def _escapes_non_ascii(text: str) -> bool:
    return any(int(m, 16) > 0x7F for m in re.findall(r"\\u([0-9a-fA-F]{4})", text))


def _check_style(before: str, after: str, pieces: list[str], style: Style) -> None:
    """What we added is spelled as the file spells things."""
    if style.crlf and "\n" in before:
        assert after.count("\n") == after.count("\r\n"), "a bare LF in a CRLF file"
    elif "\r\n" not in before:
        assert "\r" not in after.replace("\\r", "")
    # only an escaped character above ASCII says the file escapes non-ASCII: every JSON
    # writer escapes control characters such as \u001f
    if style.ascii and before.isascii() and _escapes_non_ascii(before):
        assert after.isascii(), "non-ASCII written raw in a file that escapes it"
    if before.strip() in ("{}", ""):
        return  # nothing to copy: Obsidian's layout, checked in test_textmodel
    unit = "\t" if style.layout == "obsidian" else style.unit
    for piece in pieces:
        for line in piece.split("\n"):
            lead = line[: len(line) - len(line.lstrip(" \t"))]
            if style.layout != "minified":
                assert lead.replace(unit, "") == "", f"indent {lead!r} in a {style} file"
        if style.layout == "minified":
            assert "\n" not in piece
        if style.layout == "obsidian":
            # one node or edge per line, as Obsidian writes them
            for value in parsed_piece(piece) or []:
                rows = [ln.strip().rstrip(",") for ln in after.split("\n")]
                assert any(_reads_as(row, value) for row in rows), f"{value} not on one line"


def _reads_as(row: str, value: Any) -> bool:
    try:
        return strict(json.loads(row)) == strict(value)
    except json.JSONDecodeError:
        return False


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(canvases(), STYLES, new_nodes(), st.randoms(use_true_random=False))
def test_output_minus_appended_is_the_input(
    data: dict[str, Any], style: Style, nodes: list[dict[str, Any]], rnd: Any
) -> None:
    raw = emit(data, style, _spell(rnd))
    canvas = parse_canvas(raw, path="白板.canvas")
    assert dump_bytes(canvas) == raw  # nothing changed: not one byte rewritten
    ids = [n.id for n in canvas.nodes if n.id is not None] or ["无"]
    edges = [
        {"id": f"fanout-边-{n['id']}", "fromNode": ids[0], "toNode": n["id"], "label": "口语解释"}
        for n in nodes
    ]
    for node in nodes:
        canvas.append_node(dict(node))
    for edge in edges:
        canvas.append_edge(dict(edge))
    out = dump_bytes(canvas)
    event(f"style {style.layout}, {'appended' if nodes else 'unchanged'}")
    assert out.startswith(b"\xef\xbb\xbf") == style.bom
    before, after = _decode(raw), _decode(out)
    pieces = insertions(before, after)
    assert pieces is not None, "an original byte was changed, not only added to"
    added = [v for p in pieces for v in parsed_piece(p) or []]
    assert _as_set(added) == _as_set(nodes + edges)
    # read back: the input's elements as they were, then the new ones (keys maybe reordered
    # to follow the file's own elements, values with their exact JSON types)
    original, back = json.loads(before), json.loads(after)
    for key, value in original.items():
        if key in ("nodes", "edges"):
            assert strict(back[key][: len(value)]) == strict(value)
        else:
            assert strict(back[key]) == strict(value)
    new_back = back.get("nodes", [])[len(original.get("nodes", [])) :]
    new_back += back.get("edges", [])[len(original.get("edges", [])) :]
    assert _as_set(new_back) == _as_set(nodes + edges)
    assert set(back) == set(original) | ({"nodes", "edges"} if nodes else set())
    _check_style(before, after, pieces, style)
    assert dump_bytes(parse_canvas(out)) == out  # and read again, it is written the same


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(canvases(), STYLES, st.randoms(use_true_random=False), st.data())
def test_a_write_back_only_adds_to_the_file(
    data: dict[str, Any], style: Style, rnd: Any, pick: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        vault = Path(tmp) / "知识库"
        (vault / ".obsidian").mkdir(parents=True)
        path = vault / "离散 数学.canvas"
        raw = emit(data, style, _spell(rnd))
        path.write_bytes(raw)
        usable = [n.id for n in load_canvas(path).nodes if n.valid and n.id]
        chosen = (
            pick.draw(st.lists(st.sampled_from(usable), max_size=3, unique=True)) if usable else []
        )
        results = [NoteResult(t, "口语解释", f"关于 {t!a} 的解释") for t in chosen]
        write_results(path, results)
        out = path.read_bytes()
        assert out.startswith(b"\xef\xbb\xbf") == style.bom
        pieces = insertions(_decode(raw), _decode(out))
        assert pieces is not None, "an original byte was changed, not only added to"
        added = [v for p in pieces for v in parsed_piece(p) or []]
        assert len(added) == 2 * len(results)  # a file node and an edge each
        _check_style(_decode(raw), _decode(out), pieces, style)
