"""The format-preserving canvas write, measured: time, and the lines a git diff shows.

Obsidian-style canvases (tab indent, one node or edge per line, Chinese text, groups) of
`--sizes` nodes; on each, `--notes` new file nodes + edges are appended and a tenth of
that many nodes recoloured, as a run with `--recolour` does. For the writer of the
commit (edits to the file's text) and the whole-file rewrite it replaces (`json.dumps` in
the file's indentation, still what a canvas made in memory gets):

- parse (ms): `parse_canvas` (json, plus the span scan) against `json.loads` alone;
- write (ms): `dumps_canvas` of the changed canvas; an unchanged one too;
- diff: `git diff --no-index --numstat` of the file before and after (added / removed lines).

    .venv/bin/python bench/canvas_format.py [--sizes 195,1000,3000] [--notes 300] [--repeat 5]

Last line: {"rows": [{"nodes", "parse_ms", "json_loads_ms", "write_ms", "write_unchanged_ms",
"rewrite_ms", "diff_added", "diff_removed", "rewrite_diff_added", "rewrite_diff_removed"}]}.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fanout.canvas import dumps_canvas, parse_canvas
from fanout.canvas.model import Canvas, CanvasStyle

WORDS = "命题逆否集合幂集函数映射关系等价类偏序格图树栈队列二叉遍历哈希排序递归"


def obsidian_text(nodes: int, rng: random.Random) -> str:
    rows = []
    groups = max(1, nodes // 50)
    for g in range(groups):
        rows.append({"id": f"g{g:04x}", "type": "group", "x": g * 2000, "y": 0, "width": 1900,
                     "height": 3000, "label": f"第{g + 1}章"})  # fmt: skip
    for n in range(nodes - groups):
        text = "".join(rng.choice(WORDS) for _ in range(rng.randint(6, 40)))
        row: dict[str, Any] = {"id": f"{rng.getrandbits(64):016x}", "type": "text", "text": text,
                               "x": (n % 50) * 200, "y": (n // 50) * 80, "width": 160,
                               "height": 40}  # fmt: skip
        if n % 7 == 0:
            row["color"] = "3"
        rows.append(row)
    ids = [r["id"] for r in rows]
    edges = [{"id": f"e{i:05x}", "fromNode": rng.choice(ids), "fromSide": "right",
              "toNode": rng.choice(ids), "toSide": "left"} for i in range(nodes // 2)]  # fmt: skip

    def line(v: Any) -> str:
        return "\t\t" + json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    return (
        '{\n\t"nodes":[\n' + ",\n".join(map(line, rows)) + '\n\t],\n\t"edges":[\n'
        + ",\n".join(map(line, edges)) + "\n\t]\n}"
    )  # fmt: skip


def change(canvas: Canvas, notes: int) -> None:
    texts = [n for n in canvas.nodes if n.type == "text"]
    for i in range(notes):
        target = texts[i % len(texts)]
        node_id = f"fanout-{i:016x}"
        canvas.append_node({"id": node_id, "type": "file", "file": f"白板-explanations/解释-{i}.md",
                            "x": 100000 + i, "y": 0, "width": 400, "height": 300,
                            "color": "5"})  # fmt: skip
        canvas.append_edge({"id": f"fanout-e{i:015x}", "fromNode": target.id, "fromSide": "right",
                            "toNode": node_id, "toSide": "left", "label": "口语解释"})  # fmt: skip
    for target in texts[: max(1, notes // 10)]:
        target.raw["color"] = "2"


def best_ms(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def numstat(before: str, after: str) -> tuple[int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a.canvas", Path(tmp) / "b.canvas"
        a.write_text(before, encoding="utf-8")
        b.write_text(after, encoding="utf-8")
        out = subprocess.run(
            ["git", "diff", "--no-index", "--numstat", str(a), str(b)],
            capture_output=True, text=True, check=False,
        ).stdout  # fmt: skip
    added, removed, _ = out.split("\t", 2)
    return int(added), int(removed)


def measure(nodes: int, notes: int, repeat: int) -> dict[str, Any]:
    text = obsidian_text(nodes, random.Random(nodes))
    parse_ms = best_ms(lambda: parse_canvas(text), repeat)
    loads_ms = best_ms(lambda: json.loads(text), repeat)
    canvas = parse_canvas(text)
    unchanged_ms = best_ms(lambda: dumps_canvas(canvas), repeat)
    assert dumps_canvas(canvas) == text
    change(canvas, notes)
    write_ms = best_ms(lambda: dumps_canvas(canvas), repeat)
    out = dumps_canvas(canvas)
    # the whole-file rewrite: the same data, no source text (what every write did before)
    whole = Canvas(canvas.data, style=CanvasStyle(indent="\t"))
    rewrite_ms = best_ms(lambda: dumps_canvas(whole), repeat)
    added, removed = numstat(text, out)
    r_added, r_removed = numstat(text, dumps_canvas(whole))
    return {
        "nodes": nodes,
        "lines": text.count("\n") + 1,
        "parse_ms": round(parse_ms, 2),
        "json_loads_ms": round(loads_ms, 2),
        "write_unchanged_ms": round(unchanged_ms, 2),
        "write_ms": round(write_ms, 2),
        "rewrite_ms": round(rewrite_ms, 2),
        "diff_added": added,
        "diff_removed": removed,
        "rewrite_diff_added": r_added,
        "rewrite_diff_removed": r_removed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="195,1000,3000")
    parser.add_argument("--notes", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        notes = min(args.notes, size // 2)
        row = measure(size, notes, args.repeat)
        rows.append(row | {"notes": notes, "recoloured": max(1, notes // 10)})
        print(
            f"{size:>5} nodes ({row['lines']} lines), {notes} notes + {max(1, notes // 10)} "
            f"recoloured: parse {row['parse_ms']} ms (json.loads {row['json_loads_ms']}), "
            f"write {row['write_ms']} ms (unchanged {row['write_unchanged_ms']}, whole "
            f"rewrite {row['rewrite_ms']}); diff +{row['diff_added']} -{row['diff_removed']} "
            f"(whole rewrite +{row['rewrite_diff_added']} -{row['rewrite_diff_removed']})"
        )
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
