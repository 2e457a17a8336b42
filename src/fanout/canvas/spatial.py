"""Geometry for placing notes: a grid index of rectangles and the plain-number tests.

`layout.py` scores tens of thousands of candidate places per target; each test here takes
a place as numbers (x, y, right, bottom) and walks the index's cells itself, so a place
that fails costs no `Rect`, no generator and no set. Each test gives exactly what the
`Rect`-based form gives (`gap_between`, `segment_crosses`, `Index.touching` followed by a
check): a cell list may hold a rectangle twice or one that does not touch the query, and
every test here is an "any" whose answer that cannot change.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from fanout.canvas.model import Rect

_CELL = 512.0
_HUGE = (1 << 40, 0)
#: a query or rectangle covering more cells than this is filed under `_HUGE` only
_MAX_CELLS = 4096

#: x, y, right, bottom, and what was filed (a `Rect`, or an edge's two ends)
Box = tuple[float, float, float, float, Any]
Point = tuple[float, float]


def _keys(x: float, y: float, right: float, bottom: float) -> list[tuple[int, int]]:
    x0, x1 = math.floor(x / _CELL), math.floor(right / _CELL)
    y0, y1 = math.floor(y / _CELL), math.floor(bottom / _CELL)
    if (x1 - x0 + 1) * (y1 - y0 + 1) > _MAX_CELLS:  # a huge rectangle: checked every time
        return [_HUGE]
    return [(cx, cy) for cx in range(x0, x1 + 1) for cy in range(y0, y1 + 1)]


def is_huge(x: float, y: float, right: float, bottom: float) -> bool:
    """Would the index file this rectangle (or take this query) as huge?"""
    return _keys(x, y, right, bottom)[0] == _HUGE


class Index:
    """A grid hash of rectangles, to find what a rectangle touches without a full scan."""

    def __init__(self, rects: Iterable[Rect] = ()) -> None:
        self._cells: dict[tuple[int, int], list[Rect]] = defaultdict(list)
        self._boxes: dict[tuple[int, int], list[Box]] = defaultdict(list)
        self._all: list[Rect] = []
        for rect in rects:
            self.add(rect)

    def add(self, rect: Rect, item: Any = None) -> None:
        """File `rect`; `item` is what `cells` hands back with it (default: `rect`)."""
        box = (rect.x, rect.y, rect.right, rect.bottom, rect if item is None else item)
        for key in _keys(rect.x, rect.y, rect.right, rect.bottom):
            self._cells[key].append(rect)
            self._boxes[key].append(box)
        self._all.append(rect)

    def all(self) -> list[Rect]:
        return self._all

    def touching(self, rect: Rect) -> Iterator[Rect]:
        """Each rectangle that shares area with `rect`, once, in the order they were filed
        per cell."""
        seen: set[int] = set()
        keys = _keys(rect.x, rect.y, rect.right, rect.bottom)
        for key in {_HUGE, *keys}:
            for other in self._cells.get(key, ()):
                if id(other) not in seen and other.overlaps(rect):
                    seen.add(id(other))
                    yield other

    def cells(self, x: float, y: float, right: float, bottom: float) -> list[list[Box]]:
        """The cell lists that hold every box sharing area with the query (some boxes may
        repeat or not touch it): as `touching` finds them, huge queries included."""
        keys = _keys(x, y, right, bottom)
        if keys[0] != _HUGE:
            keys.append(_HUGE)
        got = self._boxes.get
        return [cell for key in keys if (cell := got(key))]

    def hits(self, x: float, y: float, right: float, bottom: float) -> bool:
        """Does any box share area with the query?"""
        for cell in self.cells(x, y, right, bottom):
            for bx, by, br, bb, _ in cell:
                if bx < right and x < br and by < bottom and y < bb:
                    return True
        return False


def gap_between(a: Rect, b: Rect) -> float:
    """Edge-to-edge distance of two rectangles (0 if they touch or overlap)."""
    dx = max(b.x - a.right, a.x - b.right, 0.0)
    dy = max(b.y - a.bottom, a.y - b.bottom, 0.0)
    return math.hypot(dx, dy)


def side_point(rect: Rect, side: str) -> Point:
    """The midpoint of one side, where Obsidian attaches an edge."""
    return side_at(rect.x, rect.y, rect.width, rect.height, side)


def side_at(x: float, y: float, width: float, height: float, side: str) -> Point:
    """`side_point` of the rectangle (x, y, width, height)."""
    if side == "top":
        return (x + width / 2, y)
    if side == "bottom":
        return (x + width / 2, y + height)
    if side == "left":
        return (x, y + height / 2)
    if side == "right":
        return (x + width, y + height / 2)
    raise KeyError(side)


def segment_crosses(p: Point, q: Point, rect: Rect) -> bool:
    """Does the segment p-q pass through the inside of `rect` (1 px in from its sides)?"""
    return crosses_box(p, q, rect.x, rect.y, rect.right, rect.bottom)


def crosses_box(p: Point, q: Point, x: float, y: float, right: float, bottom: float) -> bool:
    """`segment_crosses` of the rectangle from (x, y) to (right, bottom)."""
    x0, y0, x1, y1 = x + 1, y + 1, right - 1, bottom - 1
    if x1 <= x0 or y1 <= y0:
        return False
    t0, t1 = 0.0, 1.0
    for d, lo, hi, s in ((q[0] - p[0], x0, x1, p[0]), (q[1] - p[1], y0, y1, p[1])):
        if d == 0:
            if not lo < s < hi:
                return False
            continue
        a, b = sorted(((lo - s) / d, (hi - s) / d))
        t0, t1 = max(t0, a), min(t1, b)
        if t0 >= t1:
            return False
    return True


def segment_box(p: Point, q: Point) -> Rect:
    """The segment's bounding box, 1 px more each way right and down."""
    return Rect(min(p[0], q[0]), min(p[1], q[1]), abs(q[0] - p[0]) + 1, abs(q[1] - p[1]) + 1)
