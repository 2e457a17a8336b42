"""The format-preserving writer on the cases a learner's vault has: exact bytes expected."""

from __future__ import annotations

import json
from pathlib import Path

from fanout.canvas import (
    ORIGINAL_VERDICT_COLOURS,
    NoteResult,
    WriteOptions,
    dumps_canvas,
    parse_canvas,
    write_results,
)

from .canvas_text import insertions

OBSIDIAN = (
    "{\n"
    '\t"nodes":[\n'
    '\t\t{"id":"q","type":"text","text":"什么是逆否命题？","x":1.6e2,"y":-0.0,"width":250,"height":60,"color":"1"},\n'
    '\t\t{"id":"y","type":"text","text":"\\u5355\\u8c03","x":0,"y":100,"width":250,"height":60,"color":"3","x":7}\n'
    "\t],\n"
    '\t"edges":[]\n'
    "}"
)  # fmt: skip
FILE_NODE = {"id": "n", "type": "file", "file": "笔记/解释.md", "x": 1, "y": 2, "width": 3,
             "height": 4, "color": "5"}  # fmt: skip
EDGE = {"id": "e", "fromNode": "y", "fromSide": "right", "toNode": "n", "toSide": "left",
        "label": "口语解释"}  # fmt: skip


def test_unchanged_is_byte_identical_whatever_the_spelling() -> None:
    assert dumps_canvas(parse_canvas(OBSIDIAN)) == OBSIDIAN


def test_appending_to_obsidian_layout_adds_one_line_per_element() -> None:
    canvas = parse_canvas(OBSIDIAN)
    canvas.append_node(dict(FILE_NODE))
    canvas.append_edge(dict(EDGE))
    out = dumps_canvas(canvas)
    lines = OBSIDIAN.split("\n")
    lines[3] += ","
    expected = [
        *lines[:4],
        '\t\t{"id":"n","type":"file","file":"笔记/解释.md","x":1,"y":2,"width":3,"height":4,"color":"5"}',
        "\t],",
        '\t"edges":[',
        '\t\t{"id":"e","fromNode":"y","fromSide":"right","toNode":"n","toSide":"left","label":"口语解释"}',
        "\t]",
        "}",
    ]  # fmt: skip
    assert out == "\n".join(expected)


def test_a_recoloured_node_changes_only_its_colour() -> None:
    canvas = parse_canvas(OBSIDIAN)
    node = canvas.node("q")
    assert node is not None
    node.raw["color"] = "2"
    out = dumps_canvas(canvas)
    assert out == OBSIDIAN.replace('"color":"1"', '"color":"2"')  # `1.6e2`, `-0.0` kept


def test_a_changed_element_keeps_its_duplicate_key_only_while_unchanged() -> None:
    canvas = parse_canvas(OBSIDIAN)
    node = canvas.node("y")
    assert node is not None
    assert node.raw["x"] == 7  # the last one wins, as in Obsidian's JSON.parse
    assert '"x":0,' in dumps_canvas(canvas)
    node.raw["color"] = "4"
    out = dumps_canvas(canvas)  # which `x` was meant is not ours to guess: written once
    row = out.split("\n")[3]
    assert row == (
        '\t\t{"id":"y","type":"text","text":"单调","x":7,"y":100,"width":250,"height":60,'
        '"color":"4"}'
    )


def test_a_new_key_in_a_pretty_element_goes_on_its_own_line() -> None:
    text = json.dumps({"nodes": [{"id": "a", "type": "text", "text": "甲", "x": 1.0}]}, indent=4)
    canvas = parse_canvas(text + "\n")
    canvas.nodes[0].raw["color"] = "1"
    canvas.nodes[0].raw["x"] = -0.0
    out = dumps_canvas(canvas)
    assert out == text.replace('"x": 1.0', '"x": -0.0,\n            "color": "1"') + "\n"


def test_an_empty_canvas_gets_obsidians_layout() -> None:
    for text in ("{}", "{}\n", "\ufeff{}"):
        canvas = parse_canvas(text)
        canvas.append_node(dict(FILE_NODE))
        out = dumps_canvas(canvas)
        body = out.removeprefix("\ufeff").split("\n")
        row = json.dumps(FILE_NODE, ensure_ascii=False, separators=(",", ":"))
        assert body[:3] == ["{", '\t"nodes":[', "\t\t" + row]
        assert out.startswith("\ufeff") == text.startswith("\ufeff")
        assert out.endswith("}\n") == text.endswith("\n")


def test_a_missing_edges_array_is_added_in_the_files_indent() -> None:
    text = '{\n  "nodes": [\n    {\n      "id": "a",\n      "x": 1\n    }\n  ]\n}'
    canvas = parse_canvas(text)
    canvas.append_edge({"id": "e", "fromNode": "a", "toNode": "a"})
    out = dumps_canvas(canvas)
    assert out == text[:-2] + (
        ',\n  "edges": [\n    {\n      "id": "e",\n      "fromNode": "a",\n'
        '      "toNode": "a"\n    }\n  ]\n}'
    )


def test_escapes_crlf_and_key_order_follow_the_file() -> None:
    data = {"nodes": [{"type": "file", "id": "f", "file": "a.md", "x": 0, "y": 0, "width": 1,
                       "height": 1, "label": "标签"}]}  # fmt: skip
    text = json.dumps(data, indent="\t", ensure_ascii=True).replace("\n", "\r\n")
    canvas = parse_canvas(text)
    canvas.append_node(dict(FILE_NODE))
    out = dumps_canvas(canvas)
    assert out.isascii()
    assert "\\u7b14\\u8bb0" in out  # 笔记, escaped as the file does
    assert out.count("\n") == out.count("\r\n")
    new = json.loads(out)["nodes"][1]
    assert list(new) == ["type", "id", "file", "x", "y", "width", "height", "color"]
    assert insertions(text, out) is not None


def test_a_lone_surrogate_is_written_escaped() -> None:
    canvas = parse_canvas(OBSIDIAN)
    canvas.append_node(dict(FILE_NODE, file="\ud800.md"))
    out = dumps_canvas(canvas)
    assert '"file":"\\ud800.md"' in out
    out.encode("utf-8")


def test_a_removed_node_rewrites_the_file_in_its_own_layout() -> None:
    canvas = parse_canvas(OBSIDIAN)
    canvas.data["nodes"].pop(0)
    out = dumps_canvas(canvas)
    assert out.split("\n")[:3] == ["{", '\t"nodes":[', out.split("\n")[2]]
    assert out.split("\n")[2].startswith('\t\t{"id":"y",')
    assert len(out.split("\n")) == 6
    assert json.loads(out) == canvas.data


def test_a_recolouring_write_back_changes_one_line_and_appends(vault: Path) -> None:
    path = vault / "逆否 命题.canvas"
    text = OBSIDIAN.replace(
        '"edges":[]', '"edges":[\n\t\t{"id":"e0","fromNode":"q","toNode":"y"}\n\t]'
    )
    path.write_text(text, encoding="utf-8", newline="")
    result = NoteResult("y", "scoring-agent", "部分理解", verdict="partial")
    report = write_results(path, [result], WriteOptions(recolour=ORIGINAL_VERDICT_COLOURS))
    assert report.recoloured == [("q", "3")]
    out = path.read_text(encoding="utf-8")
    before_lines, after_lines = text.split("\n"), out.split("\n")
    changed = [b for b in before_lines if b not in after_lines]
    # the recoloured node, and the last node and the last edge that get a comma
    assert changed == [before_lines[2], before_lines[3], before_lines[6]]
    assert after_lines[2] == before_lines[2].replace('"color":"1"', '"color":"3"')
    assert after_lines[3] == before_lines[3] + ","
    assert after_lines[7] == before_lines[6] + ","


def test_a_duplicate_nodes_key_appends_to_the_one_that_counts() -> None:
    text = '{"nodes":[{"id":"旧"}],"nodes":[{"id":"新"}],"edges":[]}'
    canvas = parse_canvas(text, path="重复.canvas")
    assert [n.id for n in canvas.nodes] == ["新"]
    assert [w.code for w in canvas.warnings].count("duplicate-key") == 1
    canvas.append_node({"id": "加"})
    out = dumps_canvas(canvas)
    assert out == text.replace('{"id":"新"}', '{"id":"新"},{"id":"加"}')


def test_odd_whitespace_is_kept_and_copied() -> None:
    text = '{ "nodes" : [ { "id" : "a" , "x" : 1 } ,\n  { "id" : "b" , "x" : 2 } ] }\r\n'
    canvas = parse_canvas(text)
    assert dumps_canvas(canvas) == text
    canvas.append_node({"id": "c", "x": 3})
    out = dumps_canvas(canvas)
    # the separators between elements and around `:` are the file's own
    assert out == text.replace('"x" : 2 }', '"x" : 2 } ,\n  {"id" : "c", "x" : 3}')


def test_an_empty_array_with_a_space_is_closed_on_its_own_line() -> None:
    canvas = parse_canvas('{\n\t"nodes":[ ],\n\t"edges":[]\n}')
    canvas.append_node({"id": "n"})
    assert dumps_canvas(canvas) == '{\n\t"nodes":[\n\t\t{"id":"n"}\n\t],\n\t"edges":[]\n}'
