"""Placing new notes: a compact stack beside each target, at the canvas's own scale.

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

This module decides where to try (the order above); `probe.py` holds the tests of a place,
run along one side of the target at a time against short lists gathered once, and
`spatial.py` the grid index and the geometry. A sink plans every note of a run before its
first call is sent, so this is time the user waits: tens of thousands of places are tested
per target on a crowded canvas. `bench/canvas_place.py --check` times it and compares every
place with the layout before it was made fast (`bench/canvas_layout_reference.py`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from fanout.canvas.model import Rect
from fanout.canvas.probe import OPPOSITE as _OPPOSITE
from fanout.canvas.probe import Probe, Scene
from fanout.canvas.spatial import gap_between, segment_box, segment_crosses, side_point

__all__ = [
    "DEFAULT_GAP",
    "DEFAULT_NODE_SIZE",
    "Layout",
    "Placement",
    "gap_between",
    "overlapping_pairs",
    "place_nodes",
    "segment_crosses",
    "side_point",
]

#: the largest note (the size notes had before they followed the canvas's scale)
DEFAULT_NODE_SIZE = (400, 300)
MIN_NODE_SIZE = (160, 60)
DEFAULT_GAP = 40
DEFAULT_MAX_RINGS = 13
#: how many nearest nodes besides the target set a note's width
NEIGHBOURS = 6
_SIDES = ("right", "bottom", "left", "top")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one new node goes: `rect`, and the sides its edge from the target should use."""

    rect: Rect
    from_side: str
    to_side: str


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
        self._groups = list(groups)
        self.gap = float(gap)
        self.max_rings = max(1, max_rings)
        self._scene = Scene(self.originals, self._groups, self.gap)

    def add(self, rect: Rect) -> None:
        """A node placed elsewhere that later notes must avoid."""
        self._scene.solid.add(rect)

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
        index = self._scene.originals
        for _ in range(6):  # widen the search until k neighbours are in it
            found = [r for r in index.touching(anchor.inflate(radius)) if r != anchor]
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
        self._scene.solid.add(spot.rect)
        p, q = side_point(anchor, spot.from_side), side_point(spot.rect, spot.to_side)
        self._scene.edges.add(segment_box(p, q), (p, q))

    def _probe(
        self,
        anchor: Rect,
        side: str,
        size: tuple[float, float],
        home: list[Rect],
        inner: Rect | None,
        places: list[tuple[float, float]],
    ) -> Probe:
        """The tests for notes of `size` at these top-left corners along one side."""
        xs, ys = [x for x, _ in places], [y for _, y in places]
        box = (min(xs), min(ys), max(xs) + size[0], max(ys) + size[1])
        return Probe(self._scene, anchor, side, size, home, inner, box)

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
            group = inner if in_group else None
            for k, size in enumerate(sizes):
                tried = rings if k == 0 else rings[:3]  # smaller only right beside it
                for distance in tried:
                    for side in _SIDES:
                        block = self._lane_block(anchor, count, distance, side, size, home, group)
                        if block is not None:
                            return block
        return None

    def _lane_block(
        self,
        anchor: Rect,
        count: int,
        distance: float,
        side: str,
        size: tuple[float, float],
        home: list[Rect],
        inner: Rect | None,
    ) -> list[Placement] | None:
        """The first good column (right or left of the target) or row (below, above) of
        `count` notes, `distance` from it, nearest first: level with the target's top (or
        left side), with its bottom (right side), centred on it, then sliding along that
        side as long as the stack still reaches the target's middle."""
        width, height = size
        step = self.gap / 2
        if side in ("right", "left"):
            pitch = height + step
            tall = count * height + (count - 1) * step
            x = anchor.right + distance if side == "right" else anchor.x - distance - width
            lo = anchor.y + anchor.height / 2 - tall
            hi = anchor.y + anchor.height / 2 - height / 2
            ends = (anchor.y, anchor.bottom - tall, anchor.y + (anchor.height - tall) / 2)
        else:
            pitch = width + step
            wide = count * width + (count - 1) * step
            y = anchor.bottom + distance if side == "bottom" else anchor.y - distance - height
            lo = anchor.x + anchor.width / 2 - wide
            hi = anchor.x + anchor.width / 2 - width / 2
            ends = (anchor.x, anchor.right - wide, anchor.x + (anchor.width - wide) / 2)
        starts = _starts(ends, lo, hi, max(step, distance / 4))
        first, last = min(starts) - 1, max(starts) + (count - 1) * pitch + 1
        box: tuple[float, float, float, float]
        if side in ("right", "left"):
            fixed = round(x)
            box = (fixed, first, fixed + width, last + height)
        else:
            fixed = round(y)
            box = (first, fixed, last + width, fixed + height)
        probe = Probe(self._scene, anchor, side, size, home, inner, box)
        block = probe.first_block(fixed, starts, pitch, count)
        if block is None:
            return None
        return [Placement(Rect(x, y, width, height), side, _OPPOSITE[side]) for x, y in block]

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
            r, scene = spot.rect, self._scene
            score = scene.score_at(anchor, spot.from_side, r.x, r.y, width, height, home, inner)
            if score is not None and not any(score[:3]):
                return spot
        rings = self._ring_distances()
        for k, (width, height) in enumerate(sizes):
            # a smaller note is only worth it right beside the target
            tried = rings if k == 0 else rings[:3]
            n = -1
            for side, distance in _lanes(tried):
                places = self._ring(anchor, distance, width, height, side)
                probe = self._probe(anchor, side, (width, height), home, inner, places)
                for (x, y), free in zip(places, probe.free_flags(places), strict=True):
                    n += 1
                    if not free:
                        continue
                    score = probe.score(x, y, free)
                    if score is None:
                        continue
                    spot = Placement(Rect(x, y, width, height), side, _OPPOSITE[side])
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
            for side in _SIDES:
                for x, y in self._ring(anchor, distance, width, height, side, steps=8):
                    if self._scene.free_at(x, y, width, height, home):
                        return Placement(Rect(x, y, width, height), side, _OPPOSITE[side])
        return outside

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
        self, anchor: Rect, distance: float, width: float, height: float, side: str, steps: int = 0
    ) -> list[tuple[float, float]]:
        """Places `distance` from the target on one side, sliding along it (in steps of
        `gap / 2` near the target, coarser further out): their top-left corners."""
        step = self.gap / 2 if distance <= self.gap else max(self.gap / 2, distance / 4)
        if side in ("right", "left"):
            x = anchor.right + distance if side == "right" else anchor.x - distance - width
            lo, hi = anchor.y - height - step, anchor.bottom + step
            rx = round(x)
            return [(rx, round(y)) for y in _slide(anchor.y, lo, hi, step, steps)]
        y = anchor.bottom + distance if side == "bottom" else anchor.y - distance - height
        lo, hi = anchor.x - width - step, anchor.right + step
        ry = round(y)
        return [(round(x), ry) for x in _slide(anchor.x, lo, hi, step, steps)]

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
        rects = [*self._scene.solid.all(), *self._groups, anchor]
        return (
            min(r.x for r in rects),
            min(r.y for r in rects),
            max(r.right for r in rects),
            max(r.bottom for r in rects),
        )


def _lanes(rings: list[float]) -> Iterator[tuple[str, float]]:
    """The order places are tried in, one side and ring at a time: the near rings side by
    side (all of the right side first, then below...: a note stays on the side it prefers
    if it fits there at all), then the rest ring by ring."""
    near, far = rings[:3], rings[3:]
    for side in _SIDES:
        for distance in near:
            yield side, distance
    for distance in far:
        for side in _SIDES:
            yield side, distance


def _starts(ends: Sequence[float], lo: float, hi: float, step: float) -> list[float]:
    """The aligned starts `ends` (each once), then `_slide` from the first of them."""
    seen: set[int] = set()
    out: list[float] = []
    for value in (*ends, *_slide(ends[0], lo, hi, step, 0)):
        key = round(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _slide(start: float, lo: float, hi: float, step: float, steps: int) -> list[float]:
    """`start`, then alternately after and before it in `step`s, within [lo, hi]."""
    out = [start]
    k = 1
    while True:
        after, before = start + k * step, start - k * step
        if not (after <= hi or before >= lo):
            return out
        if after <= hi:
            out.append(after)
        if before >= lo:
            out.append(before)
        k += 1
        if steps and k > steps:
            return out


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
