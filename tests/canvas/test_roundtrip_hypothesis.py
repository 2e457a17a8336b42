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

from .support import assert_kept, assert_no_overlap, note_body, read_json

KNOWN = {
    "id", "type", "x", "y", "width", "height", "color", "text", "file", "subpath", "url",
    "label", "background", "backgroundStyle", "fromNode", "toNode", "fromSide", "toSide",
    "fromEnd", "toEnd", "nodes", "edges",
}  # fmt: skip
CHINESE = "的一是不了人我在有他这为之大来以个中上们到说国和地也子时道出而要于就下得可你年生"
TEXT = st.text(alphabet=st.sampled_from(CHINESE) | st.characters(), max_size=40)
COLOURS = st.sampled_from(["1", "2", "3", "4", "5", "6"]) | st.from_regex(
    r"#[0-9a-fA-F]{6}", fullmatch=True
)
SIDES = st.sampled_from(["top", "right", "bottom", "left"])
ENDS = st.sampled_from(["none", "arrow"])
COORD = st.integers(-5000, 5000) | st.floats(-5000, 5000, allow_nan=False)
SIZE = st.integers(10, 800)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)
UNKNOWN = st.dictionaries(TEXT.filter(lambda k: k not in KNOWN), JSON_VALUES, max_size=3)


def optional(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=fields)


@st.composite
def node(draw: st.DrawFn, node_id: str) -> Any:
    kind = draw(st.sampled_from(["text", "text", "file", "link", "group", "malformed", "junk"]))
    if kind == "junk":
        return draw(JSON_VALUES)
    raw: dict[str, Any] = {"id": node_id, "type": kind if kind != "malformed" else "text"}
    raw |= {"x": draw(COORD), "y": draw(COORD), "width": draw(SIZE), "height": draw(SIZE)}
    raw |= draw(optional(color=COLOURS))
    if kind == "text":
        raw["text"] = draw(TEXT)
    elif kind == "file":
        raw["file"] = draw(st.sampled_from(["笔记/命题.md", "图片/图.png", "../外面.md", "a.pdf"]))
        raw |= draw(optional(subpath=st.sampled_from(["#标题", "#^block"])))
    elif kind == "link":
        raw["url"] = "https://例子.cn/" + draw(TEXT)
    elif kind == "group":
        raw |= draw(
            optional(
                label=TEXT,
                background=st.just("背景.png"),
                backgroundStyle=st.sampled_from(["cover", "ratio", "repeat"]),
            )
        )
    else:
        raw["content"] = draw(TEXT)  # the original system's mistake: no `text`
    extra = draw(UNKNOWN)
    return raw | extra


@st.composite
def canvases(draw: st.DrawFn) -> dict[str, Any]:
    ids = draw(st.lists(TEXT.filter(bool), unique=True, max_size=12))
    nodes = [draw(node(i)) for i in ids]
    edges: list[Any] = []
    for n in range(draw(st.integers(0, 10))):
        ends = st.sampled_from(ids) if ids else TEXT
        raw = {"id": f"边{n}", "fromNode": draw(ends), "toNode": draw(ends | TEXT)}
        raw |= draw(
            optional(fromSide=SIDES, toSide=SIDES, fromEnd=ENDS, toEnd=ENDS, color=COLOURS,
                     label=TEXT)
        )  # fmt: skip
        edges.append(raw | draw(UNKNOWN))
    top: dict[str, Any] = draw(UNKNOWN)
    if nodes or draw(st.booleans()):
        top["nodes"] = nodes
    if edges or draw(st.booleans()):
        top["edges"] = edges
    keys = draw(st.permutations(list(top)))
    return {k: top[k] for k in keys}


def encode(data: dict[str, Any], indent: str | None) -> str:
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate can only be written as an escape
        text = json.dumps(data, indent=indent)
    return text


@settings(max_examples=200, deadline=None)
@given(canvases(), st.sampled_from(["\t", "  ", None]))
def test_generated_canvases_round_trip(data: dict[str, Any], indent: str | None) -> None:
    text = encode(data, indent)
    canvas = parse_canvas(text, path="生成.canvas")
    out = dumps_canvas(canvas)
    assert json.loads(out) == json.loads(text)
    assert dumps_canvas(parse_canvas(out)) == out  # and writing it again changes nothing


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
        path.write_bytes(encode(data, "\t").encode("utf-8"))
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
        again = write_results(path, results)
        assert not again.changed
        assert read_json(path) == after
