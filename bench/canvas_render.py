"""Draw a canvas to a PNG: groups, nodes in their colours, edges, the first line of text.

For looking at a layout as a learner would (matplotlib, from the `dev` extra; Chinese text
needs a CJK font such as Debian's fonts-noto-cjk, which `make test` installs where it
can; without one it shows as boxes). Nodes whose id is in `new` (or, by
default, any id fanout makes) get a thick outline, so notes stand out.

    .venv/bin/python bench/canvas_render.py CANVAS OUT.png [--title T] [--width 12]
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
from matplotlib import font_manager
from matplotlib.patches import FancyBboxPatch, Rectangle

from fanout.canvas.naming import is_our_id

#: Obsidian's preset colours "1".."6"
PALETTE = {
    "1": "#fb464c",
    "2": "#e9973f",
    "3": "#e0de71",
    "4": "#44cf6e",
    "5": "#53dfdd",
    "6": "#a882ff",
}
_CJK = ("Noto Sans CJK SC", "Noto Serif CJK SC", "WenQuanYi Zen Hei", "Droid Sans Fallback")


def _font() -> str | None:
    names = {f.name for f in font_manager.fontManager.ttflist}
    return next((n for n in _CJK if n in names), None)


def _colour(raw: Any, default: str) -> str:
    if isinstance(raw, str) and raw in PALETTE:
        return PALETTE[raw]
    if isinstance(raw, str) and raw.startswith("#") and len(raw) in (4, 7):
        return raw
    return default


def _label(node: dict[str, Any], room_em: float) -> str:
    kind = node.get("type")
    if kind == "file":
        text = "▸ " + str(node.get("file", "")).rsplit("/", 1)[-1]
    elif kind == "link":
        text = "↗ " + str(node.get("url", ""))
    else:
        text = str(node.get("text", ""))
    first = next((line.strip("# ") for line in text.splitlines() if line.strip()), "")
    return _fit(first, room_em)


def _fit(text: str, room_em: float) -> str:
    """`text` cut (with …) to about `room_em` font sizes of width: CJK ~1.15 em, the rest ~0.6."""
    used = 0.0
    for k, ch in enumerate(text):
        used += 1.15 if ord(ch) >= 0x2E80 else 0.62
        if used > room_em - 1:
            return text[:k] + "…"
    return text


def render(data: dict[str, Any], out: Path, *, title: str = "", width: float = 12.0,
           new: Collection[str] | None = None) -> None:  # fmt: skip
    """Draw `data` (a canvas's JSON) to `out`."""
    font = _font()
    if font:
        plt.rcParams["font.family"] = [font, "DejaVu Sans"]
    nodes = [n for n in data.get("nodes", []) if isinstance(n, dict) and "x" in n]
    if not nodes:
        raise ValueError("the canvas has no nodes to draw")
    x0 = min(n["x"] for n in nodes)
    y0 = min(n["y"] for n in nodes)
    x1 = max(n["x"] + n["width"] for n in nodes)
    y1 = max(n["y"] + n["height"] for n in nodes)
    span_x, span_y = max(x1 - x0, 1), max(y1 - y0, 1)
    height = max(2.0, min(width * span_y / span_x, 3 * width))
    fig, ax = plt.subplots(figsize=(width, height), dpi=100)
    ax.set_xlim(x0 - 40, x1 + 40)
    ax.set_ylim(y1 + 40, y0 - 40)  # y grows downwards on a canvas
    ax.set_aspect("equal")
    ax.axis("off")
    scale = width * 72 / span_x  # points per canvas px
    fontsize = max(3.0, min(9.0, 14 * scale * 2))
    ours = (lambda i: i in new) if new is not None else is_our_id
    by_id = {n["id"]: n for n in nodes if "id" in n}
    for n in (n for n in nodes if n.get("type") == "group"):
        c = _colour(n.get("color"), "#9aa0a6")
        ax.add_patch(Rectangle((n["x"], n["y"]), n["width"], n["height"], facecolor=c,
                               alpha=0.08, edgecolor=c, linewidth=1.0))  # fmt: skip
        if n.get("label"):
            ax.text(n["x"], n["y"] - 6, str(n["label"]), fontsize=fontsize, color="#555",
                    va="bottom")  # fmt: skip
    for e in data.get("edges", []):
        a, b = by_id.get(e.get("fromNode")), by_id.get(e.get("toNode"))
        if a is None or b is None:
            continue
        p, q = _side(a, e.get("fromSide")), _side(b, e.get("toSide"))
        mine = ours(e.get("id", ""))
        ax.plot([p[0], q[0]], [p[1], q[1]], color="#1a73e8" if mine else "#888",
                linewidth=1.2 if mine else 0.6, zorder=2)  # fmt: skip
    for n in (n for n in nodes if n.get("type") != "group"):
        mine = ours(n.get("id", ""))
        c = _colour(n.get("color"), "#ffffff")
        box = ax.add_patch(FancyBboxPatch((n["x"], n["y"]), n["width"], n["height"],
                                    boxstyle="round,pad=0,rounding_size=6", facecolor=c,
                                    alpha=0.55 if c != "#ffffff" else 1.0,
                                    edgecolor="#1a73e8" if mine else "#444",
                                    linewidth=2.0 if mine else 0.6, zorder=3))  # fmt: skip
        if fontsize * 1.2 < n["height"] * scale:
            room = (n["width"] - 12) * scale / fontsize
            label = ax.text(n["x"] + 6, n["y"] + n["height"] / 2, _label(n, room),
                            fontsize=fontsize, va="center", zorder=4)  # fmt: skip
            label.set_clip_path(box)  # text stays inside its node
            label.set_clip_on(True)
    if title:
        ax.set_title(title, fontsize=11)
    with warnings.catch_warnings():
        if not font:  # no CJK font: Chinese shows as boxes, said once in the docstring
            warnings.filterwarnings("ignore", "Glyph .* missing", UserWarning)
        fig.savefig(out, bbox_inches="tight", dpi=100)
    plt.close(fig)


def _side(n: dict[str, Any], side: Any) -> tuple[float, float]:
    x, y, w, h = n["x"], n["y"], n["width"], n["height"]
    return {
        "top": (x + w / 2, y),
        "bottom": (x + w / 2, y + h),
        "left": (x, y + h / 2),
        "right": (x + w, y + h / 2),
    }.get(side, (x + w / 2, y + h / 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("canvas", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--title", default="")
    ap.add_argument("--width", type=float, default=12.0)
    a = ap.parse_args()
    try:
        data = json.loads(a.canvas.read_text("utf-8-sig"))
    except (OSError, ValueError) as exc:
        print(
            f"{a.canvas}: cannot read it as a canvas ({exc}); give a .canvas file", file=sys.stderr
        )
        raise SystemExit(2) from None
    render(data, a.out, title=a.title, width=a.width)
    print(a.out)


if __name__ == "__main__":
    main()
