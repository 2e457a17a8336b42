"""The reference: `fanout.canvas.layout` as it was before placing was made fast (at
20c49d9), kept unchanged only so that `bench/canvas_place.py --check` and
tests/canvas/test_layout_same.py can show the fast layout gives the very same places.
Not used by fanout itself. Its own description follows.

Placing new notes: a compact stack beside each target, at the canvas's own scale.

A target's notes form one stack, placed as a whole where it can be: a column `gap` to the
right of the target (notes `gap / 2` apart), else a row below it, a column left, a row
above; level with the target's top (or left side), then with its bottom (right side),
then centred, then sliding along; nearest rings first, all notes one size. A block is
taken only if every note in it is good (below) and strictly nearer its target than any
other node; first inside the target's innermost group, then just outside it (a clean
column beside a crowded group reads better than notes scattered through it).

Only where no block fits are the notes placed one by one: the first goes `gap` to the
right of the target, level with its top; the next ones under it. Where that place is
taken, the search moves outward from the target in small steps: first the
near rings (`gap`, `gap / 2`, `gap / 4` from the target) side by side, right, below,
left, then above; then rings further out (1.5, 2, 2.5, 3, 4, 5... x `gap`), each tried
right, below, left, then above the target, sliding along that side nearest the target's
corner first. A place is *good* when:

- it is free: the note grown by `gap / 4` shares no area with any node (old or placed
  before it), and every group it enters holds the target and wholly contains it, `gap /
  4` clear of its border (a note may join its target's group, never cut across a group or
  sit in another topic's; it may sit in the gutter between groups, up to their borders);
- its edge from the target (side midpoint to side midpoint) crosses no other node, and
  it does not sit on the edge of a note placed before it;
- no original node is nearer to it than its target (so a reader sees whose note it is);
- for a target in a group: it lies inside the target's innermost group.

The first good place is taken. If none is within `max_rings`, the best free place seen is
taken (fewest crossings, then nearest-to-its-target, then in the group, then the bigger
size, then nearest);
if there was none, rings of doubling width further out, as long as that is nearer than
the last resort: just outside everything, level with the target, on the canvas's side
nearest to it (never "below everything" from the far top of a tall canvas). Groups
are never grown: a group is the learner's structure, and growing it could overlap the
groups beside it and rewrites its line; a note that fits nowhere in its target's group
goes as near as it can outside it.

Note size follows the canvas: as wide as the median of the target and its nearest
neighbours (160 to 400 px), as tall as the target (60 to 300 px), in steps of 10 px. Where
no good place of that size is near, the search is repeated with a note halfway to the
smallest size, then a strip (that width, the smallest height: it fits a 60 px gutter),
then the smallest (160 x 60): a small note beside its target reads better
than a big one across the canvas. The notes of one stack never grow.

Pure and deterministic: the same nodes and requests, in the same order, give the same
places.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fanout.canvas.model import Rect

#: the largest note (the size notes had before they followed the canvas's scale)
DEFAULT_NODE_SIZE = (400, 300)
MIN_NODE_SIZE = (160, 60)
DEFAULT_GAP = 40
DEFAULT_MAX_RINGS = 13
#: how many nearest nodes besides the target set a note's width
NEIGHBOURS = 6
_CELL = 512.0
_HUGE = (1 << 40, 0)
_SIDES = ("right", "bottom", "left", "top")
_OPPOSITE = {"right": "left", "left": "right", "top": "bottom", "bottom": "top"}


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one new node goes: `rect`, and the sides its edge from the target should use."""

    rect: Rect
    from_side: str
    to_side: str


class _Index:
    """A grid hash of rectangles, to find what a rectangle touches without a full scan."""

    def __init__(self, rects: Iterable[Rect] = ()) -> None:
        self._cells: dict[tuple[int, int], list[Rect]] = defaultdict(list)
        self._all: list[Rect] = []
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
        self._all.append(rect)

    def all(self) -> list[Rect]:
        return self._all

    def touching(self, rect: Rect) -> Iterator[Rect]:
        seen: set[int] = set()
        for key in {_HUGE, *self._keys(rect)}:
            for other in self._cells.get(key, ()):
                if id(other) not in seen and other.overlaps(rect):
                    seen.add(id(other))
                    yield other


def gap_between(a: Rect, b: Rect) -> float:
    """Edge-to-edge distance of two rectangles (0 if they touch or overlap)."""
    dx = max(b.x - a.right, a.x - b.right, 0.0)
    dy = max(b.y - a.bottom, a.y - b.bottom, 0.0)
    return math.hypot(dx, dy)


def side_point(rect: Rect, side: str) -> tuple[float, float]:
    """The midpoint of one side, where Obsidian attaches an edge."""
    return {
        "top": (rect.x + rect.width / 2, rect.y),
        "bottom": (rect.x + rect.width / 2, rect.bottom),
        "left": (rect.x, rect.y + rect.height / 2),
        "right": (rect.right, rect.y + rect.height / 2),
    }[side]


def segment_crosses(p: tuple[float, float], q: tuple[float, float], rect: Rect) -> bool:
    """Does the segment p-q pass through the inside of `rect` (1 px in from its sides)?"""
    x0, y0, x1, y1 = rect.x + 1, rect.y + 1, rect.right - 1, rect.bottom - 1
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


def _round10(value: float) -> float:
    return float(round(value / 10) * 10)


class Layout:
    """Places the notes of one canvas, target by target; remembers what it placed.

    `nodes` are the canvas's non-group nodes (what notes must not overlap, and what a
    note must be nearer its target than), `groups` its groups.
    """

    def __init__(
        self,
        nodes: Iterable[Rect],
        groups: Iterable[Rect] = (),
        *,
        gap: float = DEFAULT_GAP,
        max_rings: int = DEFAULT_MAX_RINGS,
    ) -> None:
        self.originals = list(nodes)
        self._original_index = _Index(self.originals)
        self._solid = _Index(self.originals)  # originals and every note placed so far
        self._groups = list(groups)
        self._group_index = _Index(self._groups)
        self.gap = float(gap)
        self.max_rings = max(1, max_rings)
        # the edges of the notes placed so far (by their bounding boxes): a later note
        # must not sit on an earlier one's edge
        self._edges = _Index()
        self._edge_ends: dict[int, tuple[tuple[float, float], tuple[float, float]]] = {}

    def add(self, rect: Rect) -> None:
        """A node placed elsewhere that later notes must avoid."""
        self._solid.add(rect)

    # sizes

    def size_for(self, anchor: Rect) -> tuple[float, float]:
        """A note's size on this canvas: see the module docstring."""
        near = self._nearest(anchor, NEIGHBOURS)
        width = statistics.median([anchor.width, *(r.width for r in near)])
        (wmin, hmin), (wmax, hmax) = MIN_NODE_SIZE, DEFAULT_NODE_SIZE
        return (
            _round10(min(max(width, wmin), wmax)),
            _round10(min(max(anchor.height, hmin), hmax)),
        )

    def _nearest(self, anchor: Rect, k: int) -> list[Rect]:
        radius = max(anchor.width, anchor.height)
        found: list[Rect] = []
        for _ in range(6):  # widen the search until k neighbours are in it
            found = [
                r for r in self._original_index.touching(anchor.inflate(radius)) if r != anchor
            ]
            if len(found) >= k:
                break
            radius *= 2
        found.sort(key=lambda r: (gap_between(anchor, r), r.y, r.x))
        return found[:k]

    # placing

    def sizes_for(self, anchor: Rect) -> list[tuple[float, float]]:
        """The sizes a note of `anchor` may take, largest first: `size_for`, then halfway
        to the smallest, then as wide as that but the smallest height (a strip fits the
        gutter between tight groups and still shows a line of text), then the smallest
        (for where the canvas has no room for more)."""
        width, height = self.size_for(anchor)
        (wmin, hmin) = MIN_NODE_SIZE
        mid = (_round10((width + wmin) / 2), _round10((height + hmin) / 2))
        strip = (mid[0], float(hmin))
        out: list[tuple[float, float]] = []
        for size in ((width, height), mid, strip, (float(wmin), float(hmin))):
            if size not in out and size[0] <= width and size[1] <= height:
                out.append(size)
        return out

    def place(
        self, anchor: Rect, count: int, size: tuple[float, float] | None = None
    ) -> list[Placement]:
        """Places for `count` notes of the target at `anchor`, as one stack."""
        sizes = [size] if size else self.sizes_for(anchor)
        home = [g for g in self._groups if g.contains(anchor)]
        inner = min(home, key=lambda g: g.area) if home else None
        block = self._find_block(anchor, count, sizes, home, inner) if count > 1 else None
        if block is not None:
            for spot in block:
                self._commit(anchor, spot)
            return block
        placed: list[Placement] = []
        for _ in range(count):
            previous = placed[-1] if placed else None
            if previous is not None:  # a stack never grows bigger notes than it started with
                last = (previous.rect.width, previous.rect.height)
                sizes = [s for s in sizes if s[0] <= last[0] and s[1] <= last[1]] or [last]
            found = self._find(anchor, sizes, home, inner, previous)
            self._commit(anchor, found)
            placed.append(found)
        return placed

    def _commit(self, anchor: Rect, spot: Placement) -> None:
        self._solid.add(spot.rect)
        p, q = side_point(anchor, spot.from_side), side_point(spot.rect, spot.to_side)
        box = _segment_box(p, q)
        self._edges.add(box)
        self._edge_ends[id(box)] = (p, q)

    def _find_block(
        self,
        anchor: Rect,
        count: int,
        sizes: list[tuple[float, float]],
        home: list[Rect],
        inner: Rect | None,
    ) -> list[Placement] | None:
        """The whole stack at once, all its notes one size: a column right (or left) of
        the target, or a row below (or above) it, where every note is good. Failing that
        inside the target's group, the same just outside it (a clean column beside a
        crowded group reads better than notes scattered through it). None if neither."""
        rings = self._ring_distances()
        for in_group in (True, False):
            if not in_group and inner is None:
                break
            for k, (width, height) in enumerate(sizes):
                tried = rings if k == 0 else rings[:3]  # smaller only right beside it
                for block in self._blocks(anchor, count, tried, width, height):
                    if self._block_good(anchor, block, home, inner if in_group else None):
                        return block
        return None

    def _blocks(
        self, anchor: Rect, count: int, rings: list[float], width: float, height: float
    ) -> Iterator[list[Placement]]:
        """Columns and rows of `count` notes around the target, nearest first: level with
        the target's top (or left side), with its bottom (right side), centred on it, then
        sliding along that side as long as the stack still reaches the target's middle."""
        step = self.gap / 2
        tall = count * height + (count - 1) * step
        wide = count * width + (count - 1) * step
        for distance in rings:
            for side in _SIDES:
                if side in ("right", "left"):
                    x = anchor.right + distance if side == "right" else anchor.x - distance - width
                    lo = anchor.y + anchor.height / 2 - tall
                    hi = anchor.y + anchor.height / 2 - height / 2
                    ends = (anchor.y, anchor.bottom - tall, anchor.y + (anchor.height - tall) / 2)
                    for y in _starts(ends, lo, hi, max(step, distance / 4)):
                        yield [
                            Placement(
                                Rect(round(x), round(y + i * (height + step)), width, height),
                                side,
                                _OPPOSITE[side],
                            )
                            for i in range(count)
                        ]
                else:
                    y = (
                        anchor.bottom + distance
                        if side == "bottom"
                        else anchor.y - distance - height
                    )
                    lo = anchor.x + anchor.width / 2 - wide
                    hi = anchor.x + anchor.width / 2 - width / 2
                    ends = (anchor.x, anchor.right - wide, anchor.x + (anchor.width - wide) / 2)
                    for x in _starts(ends, lo, hi, max(step, distance / 4)):
                        yield [
                            Placement(
                                Rect(round(x + i * (width + step)), round(y), width, height),
                                side,
                                _OPPOSITE[side],
                            )
                            for i in range(count)
                        ]

    def _block_good(
        self, anchor: Rect, block: list[Placement], home: list[Rect], inner: Rect | None
    ) -> bool:
        for spot in block:
            score = self._score(anchor, spot, home, inner, strict=True)
            if score is None or any(score[:3]):
                return False
        return True

    def _find(
        self,
        anchor: Rect,
        sizes: list[tuple[float, float]],
        home: list[Rect],
        inner: Rect | None,
        previous: Placement | None,
    ) -> Placement:
        best: tuple[tuple[float, ...], Placement] | None = None
        width, height = sizes[0]
        for spot in self._stack_next(previous, width, height):
            score = self._score(anchor, spot, home, inner)
            if score is not None and not any(score[:3]):
                return spot
        rings = self._ring_distances()
        for k, (width, height) in enumerate(sizes):
            # a smaller note is only worth it right beside the target
            tried = rings if k == 0 else rings[:3]
            for n, spot in enumerate(self._candidates(anchor, tried, width, height)):
                score = self._score(anchor, spot, home, inner)
                if score is None:
                    continue
                if not any(score[:3]):
                    return spot
                key = (*score[:3], k, score[3], n)  # failing that: fewest faults, then bigger
                if best is None or key < best[0]:
                    best = (key, spot)
        if best is not None:
            return best[1]
        width, height = sizes[0]
        outside = self._outside_everything(anchor, width, height)
        distance = rings[-1]
        while distance * 2 < gap_between(anchor, outside.rect):
            distance *= 2  # walled in nearby: further out, in doubling steps
            for spot in self._ring(anchor, distance, width, height, steps=8):
                if self._free(spot.rect, home):
                    return spot
        return outside

    def _candidates(
        self, anchor: Rect, rings: list[float], width: float, height: float
    ) -> Iterator[Placement]:
        """The near rings side by side (all of the right side first, then below...: a
        note stays on the side it prefers if it fits there at all), then the rest ring
        by ring."""
        near, far = rings[:3], rings[3:]
        for side in _SIDES:
            for distance in near:
                yield from self._ring(anchor, distance, width, height, sides=(side,))
        for distance in far:
            yield from self._ring(anchor, distance, width, height)

    def _ring_distances(self) -> list[float]:
        """`gap`, `gap / 2`, `gap / 4` (the near rings), then outward in steps growing
        from `gap / 2` to `2 gap`: 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12... x gap."""
        g = self.gap
        far = [1.5, 2, 2.5, 3, 4, 5, 6, 8, 10, 12]
        far += [12 + 2 * k for k in range(1, max(0, self.max_rings - 13) + 1)]
        return [g, g / 2, g / 4] + [g * f for f in far[: max(0, self.max_rings - 3)]]

    def _stack_next(
        self, previous: Placement | None, width: float, height: float
    ) -> list[Placement]:
        """The next place of the stack: under the previous note (right or left of the
        target), or after it (below or above the target); else over it, or before it."""
        if previous is None:
            return []
        r, step = previous.rect, self.gap / 2
        if previous.to_side in ("left", "right"):
            after = Rect(r.x, r.bottom + step, width, height)
            before = Rect(r.x, r.y - step - height, width, height)
        else:
            after = Rect(r.right + step, r.y, width, height)
            before = Rect(r.x - step - width, r.y, width, height)
        return [Placement(rect, previous.from_side, previous.to_side) for rect in (after, before)]

    def _ring(
        self,
        anchor: Rect,
        distance: float,
        width: float,
        height: float,
        steps: int = 0,
        sides: Sequence[str] = _SIDES,
    ) -> Iterator[Placement]:
        """Places `distance` from the target on each side, sliding along it (in steps of
        `gap / 2` near the target, coarser further out)."""
        step = self.gap / 2 if distance <= self.gap else max(self.gap / 2, distance / 4)
        for side in sides:
            if side in ("right", "left"):
                x = anchor.right + distance if side == "right" else anchor.x - distance - width
                lo, hi = anchor.y - height - step, anchor.bottom + step
                for y in _slide(anchor.y, lo, hi, step, steps):
                    yield Placement(Rect(round(x), round(y), width, height), side, _OPPOSITE[side])
            else:
                y = anchor.bottom + distance if side == "bottom" else anchor.y - distance - height
                lo, hi = anchor.x - width - step, anchor.right + step
                for x in _slide(anchor.x, lo, hi, step, steps):
                    yield Placement(Rect(round(x), round(y), width, height), side, _OPPOSITE[side])

    def _score(
        self,
        anchor: Rect,
        spot: Placement,
        home: list[Rect],
        inner: Rect | None,
        strict: bool = False,
    ) -> tuple[float, ...] | None:
        """None if the place is not free; else (crossings, not nearest, not in the group,
        distance): all-zero first three means good. `strict`: another node as near as the
        target is a fault too (a whole stack must not sit between two nodes)."""
        rect = spot.rect
        if not self._free(rect, home):
            return None
        own = gap_between(rect, anchor)
        slack = 1e-6 if strict else -1e-6
        nearer = any(
            r != anchor and gap_between(rect, r) < own + slack
            for r in self._original_index.touching(rect.inflate(own + 1))
        )
        outside = inner is not None and not inner.contains(rect.inflate(self.gap / 4))
        return (float(self._crosses(anchor, spot)), float(nearer), float(outside), own)

    def _free(self, rect: Rect, home: list[Rect]) -> bool:
        grown = rect.inflate(self.gap / 4 - 0.001)
        if next(self._solid.touching(grown), None) is not None:
            return False
        # a note may sit in the gutter between groups, up to their borders, but once it
        # enters a group it must be its target's and keep clear of its border inside
        return all(g in home and g.contains(grown) for g in self._group_index.touching(rect))

    def _crosses(self, anchor: Rect, spot: Placement) -> bool:
        """Its edge crosses a node, or it sits on the edge of a note placed before it."""
        p, q = side_point(anchor, spot.from_side), side_point(spot.rect, spot.to_side)
        if any(
            r != anchor and r != spot.rect and segment_crosses(p, q, r)
            for r in self._solid.touching(_segment_box(p, q))
        ):
            return True
        return any(
            segment_crosses(*self._edge_ends[id(box)], spot.rect)
            for box in self._edges.touching(spot.rect)
        )

    def _outside_everything(self, anchor: Rect, width: float, height: float) -> Placement:
        """Just outside all nodes and groups, level with the target, on the side of the
        canvas nearest to it (right, below, left, above on a tie)."""
        x0, y0, x1, y1 = self._extent(anchor)
        g = self.gap
        options = [
            (x1 - anchor.right, Rect(x1 + g, anchor.y, width, height), "right"),
            (y1 - anchor.bottom, Rect(anchor.x, y1 + g, width, height), "bottom"),
            (anchor.x - x0, Rect(x0 - g - width, anchor.y, width, height), "left"),
            (anchor.y - y0, Rect(anchor.x, y0 - g - height, width, height), "top"),
        ]
        _, rect, side = min(options, key=lambda o: o[0])  # min keeps the first of a tie
        rect = Rect(float(round(rect.x)), float(round(rect.y)), width, height)
        return Placement(rect, side, _OPPOSITE[side])

    def _extent(self, anchor: Rect) -> tuple[float, float, float, float]:
        rects = [*self._solid.all(), *self._groups, anchor]
        return (
            min(r.x for r in rects),
            min(r.y for r in rects),
            max(r.right for r in rects),
            max(r.bottom for r in rects),
        )


def _segment_box(p: tuple[float, float], q: tuple[float, float]) -> Rect:
    return Rect(min(p[0], q[0]), min(p[1], q[1]), abs(q[0] - p[0]) + 1, abs(q[1] - p[1]) + 1)


def _starts(ends: Sequence[float], lo: float, hi: float, step: float) -> Iterator[float]:
    """The aligned starts `ends` (each once), then `_slide` from the first of them."""
    seen: set[float] = set()
    for value in (*ends, *_slide(ends[0], lo, hi, step, 0)):
        if round(value) not in seen:
            seen.add(round(value))
            yield value


def _slide(start: float, lo: float, hi: float, step: float, steps: int) -> Iterator[float]:
    """`start`, then alternately after and before it in `step`s, within [lo, hi]."""
    yield start
    k = 1
    while start + k * step <= hi or start - k * step >= lo:
        if start + k * step <= hi:
            yield start + k * step
        if start - k * step >= lo:
            yield start - k * step
        k += 1
        if steps and k > steps:
            return


def place_nodes(
    obstacles: Iterable[Rect],
    requests: Sequence[tuple[Rect, tuple[float, float] | None]],
    *,
    groups: Iterable[Rect] = (),
    gap: float = DEFAULT_GAP,
    max_rings: int = DEFAULT_MAX_RINGS,
) -> list[Placement]:
    """A place for each `(target rect, size or None)`, in order; requests for one target
    that follow each other form one stack. A size of None follows the canvas's scale."""
    layout = Layout(obstacles, groups, gap=gap, max_rings=max_rings)
    placed: list[Placement] = []
    k = 0
    while k < len(requests):
        anchor, size = requests[k]
        n = 1
        while k + n < len(requests) and requests[k + n] == (anchor, size):
            n += 1
        placed.extend(layout.place(anchor, n, size))
        k += n
    return placed


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
