"""JSON Canvas 1.0 read and written exactly; what is not a canvas is one clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fanout.canvas import Canvas, dump_bytes, dumps_canvas, load_canvas, parse_canvas
from fanout.errors import InputError

from .canvas_text import strict
from .support import study_canvas, write_canvas


def roundtrip(canvas: Canvas) -> object:
    return strict(json.loads(dumps_canvas(canvas)))


def test_every_node_type_edge_field_and_unknown_key_round_trips(tmp_path: Path) -> None:
    data = study_canvas()
    canvas = load_canvas(write_canvas(tmp_path, "离散数学.canvas", data))
    assert roundtrip(canvas) == strict(data)  # `true` is not `1`, `1` is not `1.0`
    out = json.loads(dumps_canvas(canvas))
    assert [n["id"] for n in out["nodes"]] == [n["id"] for n in data["nodes"]]
    assert list(out) == list(data)  # the unknown top-level key stays where it was
    assert list(out["nodes"][0]) == list(data["nodes"][0])
    assert canvas.warnings == []


def test_typed_accessors_read_every_field(tmp_path: Path) -> None:
    canvas = load_canvas(write_canvas(tmp_path, "离散数学.canvas", study_canvas()))
    group, _, _, yellow, file_node, link = canvas.nodes
    assert (group.type, group.label, group.background, group.background_style) == (
        "group",
        "第一章 命题逻辑",
        "图片/背景.png",
        "cover",
    )
    assert group.color == "#a0c4ff"  # hex compared case-insensitively
    assert yellow.color == "3"
    assert yellow.text is not None
    assert yellow.valid
    assert (file_node.file, file_node.subpath) == ("笔记/命题逻辑.md", "#逆否命题")
    assert link.url is not None
    assert link.url.startswith("https://")
    edge = canvas.edges[0]
    assert (edge.from_node, edge.from_side, edge.from_end) == ("m1", "right", "none")
    assert (edge.to_node, edge.to_side, edge.to_end) == ("q1", "left", "arrow")
    assert (edge.color, edge.label) == ("#ff8800", "出自")
    assert canvas.title == "离散数学"
    assert yellow.rect is not None
    assert yellow.rect.right == 900


@pytest.mark.parametrize(
    ("indent", "expected"),
    [(2, "  "), ("\t", "\t"), (None, None)],
)
def test_the_files_formatting_is_kept(
    tmp_path: Path, indent: int | str | None, expected: str | None
) -> None:
    path = tmp_path / "格式.canvas"
    separators = (",", ":") if indent is None else None
    text = json.dumps(study_canvas(), ensure_ascii=False, indent=indent, separators=separators)
    path.write_text(text, encoding="utf-8")
    canvas = load_canvas(path)
    assert canvas.style.indent == expected
    assert dumps_canvas(canvas) == path.read_text(encoding="utf-8")


def test_a_trailing_newline_and_a_bom_are_handled(tmp_path: Path) -> None:
    path = tmp_path / "换行.canvas"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"nodes": []}, indent="\t").encode() + b"\n")
    canvas = load_canvas(path)
    assert dumps_canvas(canvas).endswith("]\n}\n")
    assert dump_bytes(canvas) == path.read_bytes()  # the BOM is written back too


def test_floats_big_numbers_and_escapes_keep_their_meaning() -> None:
    text = (
        '{"nodes":[{"id":"a","type":"text","text":"\\ud83d\\ude00 \\u0000 \\"引号\\"",'
        '"x":1.5,"y":-0.0,"width":12345678901234567890,"height":3e2}],"x-未知":"\\ud800"}'
    )
    canvas = parse_canvas(text)
    out = dumps_canvas(canvas)
    assert out == text  # byte for byte: `3e2`, `-0.0` and every escape as they were
    assert strict(json.loads(out)) == strict(json.loads(text))
    assert out.encode("utf-8")  # a lone surrogate stays an escape, the file stays UTF-8


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"nodes": [\n  {"id": "a",\n  }\n]}', ":3:"),  # line:column of the error
        ("nodes: []", ":1:1:"),
        ("[]", "holds an array"),
        ('"canvas"', "holds a string"),
        ('{"nodes": {}}', "`nodes` must be an array"),
        ('{"edges": "none"}', "`edges` must be an array"),
        ('{"nodes": [{"id": "a", "x": NaN}]}', "not valid JSON"),
    ],
)
def test_what_is_not_a_canvas_is_one_error_with_its_location(
    tmp_path: Path, content: str, needle: str
) -> None:
    path = tmp_path / "坏的.canvas"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as info:
        load_canvas(path)
    assert str(path) in str(info.value)
    assert needle in str(info.value)


def test_not_utf8_names_the_byte(tmp_path: Path) -> None:
    path = tmp_path / "编码.canvas"
    path.write_bytes(b'{"nodes": [\n{"id": "\xff"}]}')
    with pytest.raises(InputError, match=r"编码\.canvas:2: not UTF-8"):
        load_canvas(path)


@pytest.mark.parametrize("key", ["nodes", "edges"])
def test_duplicate_ids_are_an_error_naming_the_id(tmp_path: Path, key: str) -> None:
    data = study_canvas()
    data[key].append(dict(data[key][1]))
    path = write_canvas(tmp_path, "重复.canvas", data)
    with pytest.raises(InputError) as info:
        load_canvas(path)
    dup = data[key][1]["id"]
    assert f"'{dup}'" in str(info.value)
    assert f"{key}[1] and {key}[{len(data[key]) - 1}]" in str(info.value)


def test_a_missing_file_and_a_folder_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such canvas"):
        load_canvas(tmp_path / "没有.canvas")
    with pytest.raises(InputError, match="folder"):
        load_canvas(tmp_path)


def test_malformed_entries_are_kept_with_warnings(tmp_path: Path) -> None:
    data = {
        "nodes": [
            {"id": "ok", "type": "text", "text": "好", "x": 0, "y": 0, "width": 1, "height": 1},
            {
                "id": "content",
                "type": "text",
                "content": "没有 text",
                "x": 0,
                "y": 0,
                "width": 1,
                "height": 1,
            },
            {"type": "file", "x": "0"},
            "不是对象",
            {"id": "odd", "type": "漂浮", "x": 0, "y": 0, "width": 1, "height": 1},
        ],
        "edges": [
            {"id": "dangling", "fromNode": "ok", "toNode": "不存在"},
            {"id": "half", "fromNode": "ok"},
            42,
        ],
    }
    canvas = load_canvas(write_canvas(tmp_path, "残缺.canvas", data))
    assert roundtrip(canvas) == strict(data)
    codes = [w.code for w in canvas.warnings]
    assert codes.count("missing-field") == 3
    assert codes.count("bad-node") == 1
    assert codes.count("dangling-edge") == 1
    assert codes.count("bad-edge") == 2
    assert [n.valid for n in canvas.nodes] == [True, False, False, False, False]
    assert [e.id for e in canvas.valid_edges()] == []
    assert any("content" in w.message and "`text`" in w.message for w in canvas.warnings)


def test_duplicate_keys_keep_the_last_value_and_say_so() -> None:
    canvas = parse_canvas('{"nodes": [], "x": 1, "x": 2}', path="重复键.canvas")
    assert canvas.data["x"] == 2
    assert [w.code for w in canvas.warnings] == ["duplicate-key"]


def test_an_empty_file_is_an_empty_canvas_with_a_warning() -> None:
    canvas = parse_canvas(b"  \n", path="空.canvas")
    assert canvas.data == {}
    assert canvas.nodes == []
    assert [w.code for w in canvas.warnings] == ["empty-file"]
    assert dumps_canvas(canvas) == "{}\n"
