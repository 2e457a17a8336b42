"""Is there room near each target at all? The ceiling of `near` on a canvas.

For each yellow target of a corpus canvas, every place of a note of the smallest size the
layout uses (160 x 60; and of the size it would like) is tried on a 10 px grid around it:
free (10 px clear of every node; groups ignored, so this is more generous than the
layout), its straight edge from the nearer side of the target crossing no other node,
and no original node nearer to it than the target (a tie counts for the target, as in
`bench/canvas_layout.py`). A target "has room" for k notes if k such places exist that
do not overlap each other. The share of notes that could be near is then an upper bound
for what any layout that moves nothing of the learner's can reach.

    .venv/bin/python bench/canvas_room.py [--only 紧凑分组,看板] [--notes 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from canvas_corpus import write_corpus  # noqa: E402
from canvas_layout import gap, segment_hits, side_point  # noqa: E402

Box = tuple[float, float, float, float]
YELLOWS = {"3", "#ffff00", "#ffeb3b", "yellow"}
CLEAR = 10


def _overlap(a: Box, b: Box, clear: float = 0) -> bool:
    return (
        a[0] < b[0] + b[2] + clear
        and b[0] < a[0] + a[2] + clear
        and a[1] < b[1] + b[3] + clear
        and b[1] < a[1] + a[3] + clear
    )


def _sides(target: Box, box: Box) -> tuple[str, str]:
    dx = (box[0] + box[2] / 2) - (target[0] + target[2] / 2)
    dy = (box[1] + box[3] / 2) - (target[1] + target[3] / 2)
    if abs(dx) * target[3] >= abs(dy) * target[2]:
        return ("right", "left") if dx >= 0 else ("left", "right")
    return ("bottom", "top") if dy >= 0 else ("top", "bottom")


def good_places(target: Box, others: list[Box], size: tuple[float, float]) -> list[Box]:
    w, h = size
    reach = 2 * max(target[2], target[3]) + max(w, h)
    out: list[Box] = []
    x = target[0] - reach
    while x <= target[0] + target[2] + reach:
        y = target[1] - reach
        while y <= target[1] + target[3] + reach:
            box = (x, y, w, h)
            y += 10
            if _overlap(box, target, CLEAR) or any(_overlap(box, o, CLEAR) for o in others):
                continue
            own = gap(box, target)
            if any(gap(box, o) < own - 1e-6 for o in others):
                continue
            a, b = _sides(target, box)
            p, q = side_point(target, a), side_point(box, b)
            if any(segment_hits(p, q, o) for o in others):
                continue
            out.append(box)
        x += 10
    return out


def disjoint(places: list[Box], k: int) -> bool:
    """Are there k places among `places` that do not overlap each other (greedy)?"""
    chosen: list[Box] = []
    for box in places:
        if all(not _overlap(box, c, CLEAR) for c in chosen):
            chosen.append(box)
            if len(chosen) >= k:
                return True
    return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="紧凑分组,看板")
    ap.add_argument("--notes", type=int, default=2)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for path in write_corpus(Path(tmp), a.seed, a.only.split(",")):
            data = json.loads(path.read_text("utf-8"))
            nodes = [n for n in data["nodes"] if n.get("type") != "group"]
            boxes = {n["id"]: (n["x"], n["y"], n["width"], n["height"]) for n in nodes}
            targets = [n["id"] for n in nodes if str(n.get("color", "")).lower() in YELLOWS]
            for size in ((160, 60), (320, 100)):
                room = sum(
                    disjoint(
                        good_places(boxes[t], [b for i, b in boxes.items() if i != t], size),
                        a.notes,
                    )
                    for t in targets
                )
                print(
                    f"{path.stem}: {room} of {len(targets)} targets have room for "
                    f"{a.notes} notes of {size[0]} x {size[1]} "
                    f"(near at most {room / len(targets):.0%})"
                )


if __name__ == "__main__":
    main()
