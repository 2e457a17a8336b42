"""Placing new nodes: near their target, overlapping nothing, the same way every time.

Around each target lies a lattice of slots the size of the new node, `gap` apart: column 1
starts `gap` right of the target, column 0 is the target's own (its slots start `gap` below
or above it), negative columns go left; in the side columns row 0 is level with the
target's top. Slots are tried ring by ring (Chebyshev distance from the target), inside a
ring right before below before left before above, nearest first.

A slot is free when its rectangle, grown by `gap / 2`, shares no area with any node (old or
placed before it) and, for groups, either misses the group or lies wholly inside a group
that also holds the target: a note may join its target's group, never cut across a group or
sit in another topic's. If the first `max_rings` rings are full, the node goes below
everything. Pure and deterministic: the same canvas and requests give the same places.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fanout.canvas.model import Rect

DEFAULT_NODE_SIZE = (400, 300)
DEFAULT_GAP = 40
DEFAULT_MAX_RINGS = 8
_CELL = 512.0
_HUGE = (1 << 40, 0)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one new node goes: `rect`, and the sides its edge from the target should use."""

    rect: Rect
    from_side: str
    to_side: str


class _Index:
    """A grid hash of rectangles, to find what a rectangle touches without a full scan."""

    def __init__(self, rects: Iterable[Rect]) -> None:
        self._cells: dict[tuple[int, int], list[Rect]] = defaultdict(list)
        self.bottom: float | None = None
        for rect in rects:
            self.add(rect)

    def _keys(self, rect: Rect) -> Iterator[tuple[int, int]]:
        x0, x1 = math.floor(rect.x / _CELL), math.floor(rect.right / _CELL)
        y0, y1 = math.floor(rect.y / _CELL), math.floor(rect.bottom / _CELL)
        if (x1 - x0 + 1) * (y1 - y0 + 1) > 4096:  # a huge rectangle: checked every time
            yield _HUGE
            return
        for cx in range(x0, x1 + 1):
            for cy in range(y0, y1 + 1):
                yield (cx, cy)

    def add(self, rect: Rect) -> None:
        for key in self._keys(rect):
            self._cells[key].append(rect)
        self.bottom = rect.bottom if self.bottom is None else max(self.bottom, rect.bottom)

    def touching(self, rect: Rect) -> Iterator[Rect]:
        keys = {_HUGE, *self._keys(rect)}
        for key in keys:
            for other in self._cells.get(key, ()):
                if other.overlaps(rect):
                    yield other


class _Free:
    """Answers "may a new node go here?" for one target."""

    def __init__(self, nodes: _Index, groups: _Index, home: list[Rect], margin: float) -> None:
        self.nodes, self.groups, self.home, self.margin = nodes, groups, home, margin

    def __call__(self, rect: Rect) -> bool:
        grown = rect.inflate(self.margin)
        if next(self.nodes.touching(grown), None) is not None:
            return False
        return all(g in self.home and g.contains(grown) for g in self.groups.touching(grown))


def _axis(start: float, size: float, new: float, gap: float, i: int) -> float:
    """Slot i's coordinate along one axis of the target's lattice."""
    if i >= 1:
        return start + size + gap + (i - 1) * (new + gap)
    return start + i * (new + gap)


def _ring(r: int) -> list[tuple[int, int]]:
    cells = [(i, j) for i in range(-r, r + 1) for j in range(-r, r + 1) if max(abs(i), abs(j)) == r]

    def rank(cell: tuple[int, int]) -> tuple[int, int, int, int]:
        i, j = cell
        if i > 0 and j >= 0:
            side = 0  # right, then down the right
        elif j > 0:
            side = 1  # below
        elif i > 0:
            side = 2  # right, above the target's top
        elif i < 0:
            side = 3  # left
        else:
            side = 4  # straight above
        return (side, abs(i) + abs(j), j, i)

    return sorted(cells, key=rank)


_RINGS = [_ring(r) for r in range(0, 33)]


def _sides(i: int, j: int) -> tuple[str, str]:
    if i >= 1:
        return "right", "left"
    if j >= 1:
        return "bottom", "top"
    if i <= -1:
        return "left", "right"
    return "top", "bottom"


def place_nodes(
    obstacles: Iterable[Rect],
    requests: Sequence[tuple[Rect, tuple[float, float]]],
    *,
    groups: Iterable[Rect] = (),
    gap: float = DEFAULT_GAP,
    max_rings: int = DEFAULT_MAX_RINGS,
) -> list[Placement]:
    """A place for each `(target rect, (width, height))`, in order, each avoiding every
    obstacle, every node placed before it, and the groups that do not hold its target."""
    nodes = _Index(obstacles)
    group_list = list(groups)
    group_index = _Index(group_list)
    placed: list[Placement] = []
    for anchor, (width, height) in requests:
        home = [g for g in group_list if g.contains(anchor)]
        free = _Free(nodes, group_index, home, gap / 2)
        found = _search(anchor, width, height, gap, min(max_rings, len(_RINGS) - 1), free)
        if found is None:
            found = _below_everything(nodes, group_index, anchor, width, height, gap)
        nodes.add(found.rect)
        placed.append(found)
    return placed


def _search(
    anchor: Rect, width: float, height: float, gap: float, rings: int, free: _Free
) -> Placement | None:
    for r in range(1, rings + 1):
        for i, j in _RINGS[r]:
            x = round(_axis(anchor.x, anchor.width, width, gap, i))
            if i == 0:  # the target's own column: rows start below/above it
                y = round(_axis(anchor.y, anchor.height, height, gap, j))
            else:  # side columns: a stack of new nodes level with the target's top
                y = round(anchor.y + j * (height + gap))
            rect = Rect(x, y, width, height)
            if free(rect):
                return Placement(rect, *_sides(i, j))
    return None


def _below_everything(
    nodes: _Index, groups: _Index, anchor: Rect, width: float, height: float, gap: float
) -> Placement:
    bottoms = [b for b in (nodes.bottom, groups.bottom) if b is not None]
    y = float(round(max(bottoms, default=anchor.bottom) + gap))
    return Placement(Rect(float(round(anchor.x)), y, width, height), "bottom", "top")


def overlapping_pairs(rects: Sequence[Rect]) -> list[tuple[int, int]]:
    """Indices of every pair of rectangles that share area (for checks and tests)."""
    order = sorted(range(len(rects)), key=lambda k: rects[k].x)
    pairs: list[tuple[int, int]] = []
    for pos, a in enumerate(order):
        for b in order[pos + 1 :]:
            if rects[b].x >= rects[a].right:
                break
            if rects[a].overlaps(rects[b]):
                pairs.append((min(a, b), max(a, b)))
    return pairs
