"""The tests a candidate place for a note must pass, made cheap enough to run by the ten
thousand.

`Scene` holds what the tests look at: the nodes (`originals`), everything a note must not
overlap (`solid`: the nodes and the notes placed so far), the groups, and the edges of the
notes placed so far, each in a grid `Index`. Its `free_at`/`score_at` test one place from
scratch (the index's cells per test).

`Probe` tests many places along one side of a target at once (a column right or left of it,
a row below or above; one note size): it gathers once what any of them could touch (the
solids near the side, the nodes near enough to be nearer than the target, what an edge from
the target could cross) and then tests each place against those short lists. The answers
are exactly `Scene`'s: every list is a superset of what the place's own query finds, and a
rectangle outside that query cannot pass the test it is in the list for.

A place is given as its note's top-left (x, y) (its size is the probe's); `side` is the
target's side the note's edge leaves from (it reaches the note's opposite side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fanout.canvas.model import Rect
from fanout.canvas.spatial import Box, Index, Point, crosses_box, is_huge, side_at

OPPOSITE = {"right": "left", "left": "right", "top": "bottom", "bottom": "top"}
#: a stack's notes must be strictly nearer their target than any other node; one note
#: may be as near to another node as to its target
STRICT, LENIENT = 1e-6, -1e-6
Score = tuple[float, float, float, float]


def gap_to(anchor: Rect, x: float, y: float, w: float, h: float) -> float:
    """`gap_between(Rect(x, y, w, h), anchor)`."""
    dx = max(anchor.x - (x + w), x - anchor.right, 0.0)
    dy = max(anchor.y - (y + h), y - anchor.bottom, 0.0)
    return math.hypot(dx, dy)


class Scene:
    """The canvas as the tests see it; `Layout` adds each note it places."""

    def __init__(self, nodes: Sequence[Rect], groups: Sequence[Rect], gap: float) -> None:
        self.originals = Index(nodes)
        self.solid = Index(nodes)  # the nodes and every note placed so far
        self.groups = list(groups)
        self.group_index = Index(self.groups)
        # the edges of the notes placed so far (by their bounding boxes, with their ends):
        # a later note must not sit on an earlier one's edge
        self.edges = Index()
        self.gap = gap

    def free_at(self, x: float, y: float, w: float, h: float, home: list[Rect]) -> bool:
        """The note grown by `gap / 4` shares no area with any node or note, and every group
        it enters holds the target (`home`) and wholly contains it, `gap / 4` clear."""
        m = self.gap / 4 - 0.001
        gx, gy = x - m, y - m
        gr, gb = gx + (w + 2 * m), gy + (h + 2 * m)
        if self.solid.hits(gx, gy, gr, gb):
            return False
        if not self.groups:
            return True
        right, bottom = x + w, y + h
        for cell in self.group_index.cells(x, y, right, bottom):
            for bx, by, br, bb, g in cell:
                inside = bx <= gx and by <= gy and gr <= br and gb <= bb and g in home
                if bx < right and x < br and by < bottom and y < bb and not inside:
                    return False
        return True

    def outside(self, inner: Rect, x: float, y: float, w: float, h: float) -> bool:
        """Not inside `inner`, `gap / 4` clear of its border."""
        q = self.gap / 4
        ix, iy = x - q, y - q
        return not (
            inner.x <= ix
            and inner.y <= iy
            and ix + (w + 2 * q) <= inner.right
            and iy + (h + 2 * q) <= inner.bottom
        )

    def nearer(
        self, anchor: Rect, x: float, y: float, w: float, h: float, own: float, slack: float
    ) -> bool:
        """Is a node other than the target less than `own + slack` away?"""
        m = own + 1
        qx, qy = x - m, y - m
        right, bottom = x + w, y + h
        limit = own + slack
        hypot = math.hypot
        for cell in self.originals.cells(qx, qy, qx + (w + 2 * m), qy + (h + 2 * m)):
            for bx, by, br, bb, r in cell:
                dx = max(bx - right, x - br, 0.0)
                dy = max(by - bottom, y - bb, 0.0)
                if hypot(dx, dy) < limit and r != anchor:
                    return True
        return False

    def crosses(self, anchor: Rect, side: str, x: float, y: float, w: float, h: float) -> bool:
        """Its edge crosses a node or note, or it sits on the edge of a note placed before."""
        p = side_at(anchor.x, anchor.y, anchor.width, anchor.height, side)
        q = side_at(x, y, w, h, OPPOSITE[side])
        sx, sy = min(p[0], q[0]), min(p[1], q[1])
        sr, sb = sx + (abs(q[0] - p[0]) + 1), sy + (abs(q[1] - p[1]) + 1)
        for cell in self.solid.cells(sx, sy, sr, sb):
            for bx, by, br, bb, r in cell:
                if (
                    crosses_box(p, q, bx, by, br, bb)
                    and r != anchor
                    and (r.x, r.y, r.width, r.height) != (x, y, w, h)
                ):
                    return True
        right, bottom = x + w, y + h
        for cell in self.edges.cells(x, y, right, bottom):
            for _, _, _, _, (ep, eq) in cell:
                if crosses_box(ep, eq, x, y, right, bottom):
                    return True
        return False

    def score_at(
        self,
        anchor: Rect,
        side: str,
        x: float,
        y: float,
        w: float,
        h: float,
        home: list[Rect],
        inner: Rect | None,
        slack: float = LENIENT,
    ) -> Score | None:
        """None if the place is not free; else (crossings, not nearest, not in the group,
        distance): all-zero first three means good."""
        if not self.free_at(x, y, w, h, home):
            return None
        own = gap_to(anchor, x, y, w, h)
        nearer = self.nearer(anchor, x, y, w, h, own, slack)
        outside = inner is not None and self.outside(inner, x, y, w, h)
        crosses = self.crosses(anchor, side, x, y, w, h)
        return (float(crosses), float(nearer), float(outside), own)


class Probe:
    """The tests of `Scene` for places along one side of `anchor`, all within the box
    (x0, y0)-(x1, y1), notes `w` x `h`."""

    def __init__(
        self,
        scene: Scene,
        anchor: Rect,
        side: str,
        size: tuple[float, float],
        home: list[Rect],
        inner: Rect | None,
        box: tuple[float, float, float, float],
    ) -> None:
        self.scene, self.anchor, self.side, self.home, self.inner = scene, anchor, side, home, inner
        self.w, self.h = size
        self.to_side = OPPOSITE[side]
        x0, y0, x1, y1 = box
        # no place is further from the target than this
        dx = max(anchor.x - x0, x1 - anchor.right, 0.0)
        dy = max(anchor.y - y0, y1 - anchor.bottom, 0.0)
        reach = math.hypot(dx, dy) + 2
        self.box = (x0, y0, x1, y1)
        self._reach = reach
        # a query of a place that the index files as huge sees only huge rectangles: there
        # the short lists would not give the same answers, so test place by place
        self.exact = is_huge(
            min(x0 - reach, anchor.x - 2),
            min(y0 - reach, anchor.y - 2),
            max(x1 + reach, anchor.right + 2),
            max(y1 + reach, anchor.bottom + 2),
        )
        self.m = scene.gap / 4 - 0.001
        self.p = side_at(anchor.x, anchor.y, anchor.width, anchor.height, side)
        self.vertical = side in ("right", "left")
        # per column x (or row y): the solids level with it, as their extent along the side
        self._runs: dict[float, list[tuple[float, float]]] = {}
        self._groups: list[tuple[float, float, float, float, bool]] | None = None
        self._near: list[Box] | None = None
        self._cross: list[Box] | None = None
        self._edges: list[tuple[Point, Point]] = []

    def _gather(self, index: Index, x0: float, y0: float, x1: float, y1: float) -> list[Box]:
        """Each box of `index` sharing area with (x0, y0)-(x1, y1), once."""
        seen: set[int] = set()
        out = []
        for cell in index.cells(x0, y0, x1, y1):
            for box in cell:
                bx, by, br, bb, item = box
                if bx < x1 and x0 < br and by < y1 and y0 < bb and id(item) not in seen:
                    seen.add(id(item))
                    out.append(box)
        return out

    def _group_list(self) -> list[tuple[float, float, float, float, bool]]:
        """The groups a place may enter, and whether each holds the target."""
        self._groups = [
            (bx, by, br, bb, g in self.home)
            for bx, by, br, bb, g in self._gather(self.scene.group_index, *self.box)
        ]
        return self._groups

    def _in_groups(self, x: float, y: float) -> bool:
        """Every group the note enters holds the target and contains the note grown by
        `m` (`free` without the solids)."""
        groups = self._groups if self._groups is not None else self._group_list()
        if not groups:
            return True
        m, w, h = self.m, self.w, self.h
        gx, gy = x - m, y - m
        gr, gb = gx + (w + 2 * m), gy + (h + 2 * m)
        right, bottom = x + w, y + h
        for bx, by, br, bb, ok in groups:
            inside = bx <= gx and by <= gy and gr <= br and gb <= bb and ok
            if bx < right and x < br and by < bottom and y < bb and not inside:
                return False
        return True

    def _lists(self) -> tuple[list[Box], list[Box]]:
        anchor = self.anchor
        x0, y0, x1, y1 = self.box
        r = self._reach
        self._near = [
            b
            for b in self._gather(self.scene.originals, x0 - r, y0 - r, x1 + r, y1 + r)
            if b[4] != anchor
        ]
        cx0, cy0 = min(x0, anchor.x) - 1, min(y0, anchor.y) - 1
        cx1, cy1 = max(x1, anchor.right) + 1, max(y1, anchor.bottom) + 1
        self._cross = [
            b for b in self._gather(self.scene.solid, cx0, cy0, cx1, cy1) if b[4] != anchor
        ]
        self._edges = [b[4] for b in self._gather(self.scene.edges, x0 - 1, y0 - 1, x1 + 1, y1 + 1)]
        return self._near, self._cross

    def free(self, x: float, y: float) -> bool:
        """`Scene.free_at` of the place: the solids level with its column (or row) tested
        along the side only, then the groups."""
        if self.exact:
            return self.scene.free_at(x, y, self.w, self.h, self.home)
        fixed, v = (x, y) if self.vertical else (y, x)
        run = self._runs.get(fixed)
        if run is None:
            run = self._run(fixed)
        a0 = v - self.m
        a1 = a0 + ((self.h if self.vertical else self.w) + 2 * self.m)
        for b0, b1 in run:
            if b0 < a1 and a0 < b1:
                return False
        return not self.scene.groups or self._in_groups(x, y)

    def first_block(
        self, fixed: float, starts: Sequence[float], pitch: float, count: int
    ) -> list[tuple[float, float]] | None:
        """The first of `starts` where a stack of `count` notes is good, as the notes'
        top-left corners: note i at `round(start + i * pitch)` along the side (down a column
        right or left of the target, across a row below or above), `fixed` the column's x
        or the row's y. Each note place is tested once (stacks share them), and whether it
        is free first, its fixed side tested once for all: the answer of `free` and `good`
        note by note, sooner."""
        vertical, free = self.vertical, self.free
        m = self.m
        along = (self.h if vertical else self.w) + 2 * m
        run = [] if self.exact else self._run(fixed)
        # the groups tested place by place (`free`); else the solids level with it, here
        by_place = self.exact or bool(self.scene.groups)
        is_free: dict[int, bool] = {}
        is_good: dict[int, bool] = {}
        for start in starts:
            ok = True
            for i in range(count if run or by_place else 0):  # nothing there: all free
                v = round(start + i * pitch)
                f = is_free.get(v)
                if f is None:
                    if by_place:
                        f = free(fixed, v) if vertical else free(v, fixed)
                    else:
                        # the overlap test of `free_flags` below, inlined: this loop runs for
                        # every place of every candidate start, where a call per place cost
                        a0 = v - m
                        a1 = a0 + along
                        f = True
                        for b0, b1 in run:
                            if b0 < a1 and a0 < b1:
                                f = False
                                break
                    is_free[v] = f
                if not f:
                    ok = False
                    break
            if not ok:
                continue
            for i in range(count - 1, -1, -1):  # the far end first: likeliest to fail
                v = round(start + i * pitch)
                g = is_good.get(v)
                if g is None:
                    g = is_good[v] = self.good(fixed, v) if vertical else self.good(v, fixed)
                if not g:
                    break
            else:
                along_side = [round(start + i * pitch) for i in range(count)]
                return [(fixed, v) if vertical else (v, fixed) for v in along_side]
        return None

    def _run(self, fixed: float) -> list[tuple[float, float]]:
        """The solids level with the column at x = `fixed` (as their top and bottom) or the
        row at y = `fixed` (their left and right): a note there, grown by `m`, is free of
        the solids when it overlaps none of them along the side."""
        m, w, h = self.m, self.w, self.h
        x0, y0, x1, y1 = self.box
        q = m + 1
        x0, y0, x1, y1 = x0 - q, y0 - q, x1 + q, y1 + q
        g0 = fixed - m
        out: list[tuple[float, float]] = []
        for cell in self.scene.solid.cells(x0, y0, x1, y1):
            if self.vertical:
                g1 = g0 + (w + 2 * m)
                out += [
                    (by, bb)
                    for bx, by, br, bb, _ in cell
                    if bx < g1 and g0 < br and by < y1 and y0 < bb
                ]
            else:
                g1 = g0 + (h + 2 * m)
                out += [
                    (bx, br)
                    for bx, by, br, bb, _ in cell
                    if by < g1 and g0 < bb and bx < x1 and x0 < br
                ]
        self._runs[fixed] = out
        return out

    def _nearer(self, x: float, y: float, own: float, slack: float) -> bool:
        near = self._near if self._near is not None else self._lists()[0]
        right, bottom = x + self.w, y + self.h
        limit = own + slack
        hypot = math.hypot
        for bx, by, br, bb, _ in near:
            # hypot(dx, dy) is never below dx or dy (its error is under 1 ulp), so a box
            # that far along one axis is not nearer: skipped without the hypot
            dx = bx - right
            if x - br > dx:
                dx = x - br
            if dx >= limit:
                continue
            dy = by - bottom
            if y - bb > dy:
                dy = y - bb
            if dy >= limit:
                continue
            if hypot(max(dx, 0.0), max(dy, 0.0)) < limit:
                return True
        return False

    def _crosses(self, x: float, y: float) -> bool:
        cross = self._cross if self._cross is not None else self._lists()[1]
        w, h = self.w, self.h
        p, q = self.p, side_at(x, y, w, h, self.to_side)
        for bx, by, br, bb, r in cross:
            if crosses_box(p, q, bx, by, br, bb) and (r.x, r.y, r.width, r.height) != (x, y, w, h):
                return True
        right, bottom = x + w, y + h
        return any(crosses_box(ep, eq, x, y, right, bottom) for ep, eq in self._edges)

    def good(self, x: float, y: float) -> bool:
        """A place a whole stack may use: free, in the group, no other node as near as the
        target (a stack must not sit between two nodes), its edge crossing nothing."""
        if self.exact:
            s = self.scene.score_at(
                self.anchor, self.side, x, y, self.w, self.h, self.home, self.inner, STRICT
            )
            return s is not None and not any(s[:3])
        if not self.free(x, y):
            return False
        if self.inner is not None and self.scene.outside(self.inner, x, y, self.w, self.h):
            return False
        if self._nearer(x, y, gap_to(self.anchor, x, y, self.w, self.h), STRICT):
            return False
        return not self._crosses(x, y)

    def free_flags(self, places: Sequence[tuple[float, float]]) -> list[bool]:
        """`free` of each place (a column's or a row's: tested along the side only)."""
        if self.exact or self.scene.groups:
            return [self.free(x, y) for x, y in places]
        m, vertical = self.m, self.vertical
        along = (self.h if vertical else self.w) + 2 * m
        out = []
        for x, y in places:
            fixed, v = (x, y) if vertical else (y, x)
            run = self._runs.get(fixed)
            if run is None:
                run = self._run(fixed)
            a0 = v - m
            a1 = a0 + along
            f = True
            for b0, b1 in run:
                if b0 < a1 and a0 < b1:
                    f = False
                    break
            out.append(f)
        return out

    def score(self, x: float, y: float, free: bool | None = None) -> Score | None:
        """`Scene.score_at` (lenient) of the place; `free`: `free(x, y)` if known."""
        if self.exact:
            a = self.anchor
            return self.scene.score_at(a, self.side, x, y, self.w, self.h, self.home, self.inner)
        if not (self.free(x, y) if free is None else free):
            return None
        own = gap_to(self.anchor, x, y, self.w, self.h)
        nearer = self._nearer(x, y, own, LENIENT)
        outside = self.inner is not None and self.scene.outside(self.inner, x, y, self.w, self.h)
        return (float(self._crosses(x, y)), float(nearer), float(outside), own)
