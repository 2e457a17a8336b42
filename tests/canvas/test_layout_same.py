"""Placing notes was made fast without moving a single note: the layout gives the places
the layout before it gave (bench/canvas_layout_reference.py, kept for this) on the
canvases the tests, the benchmarks and `make demo` use, and on seeded random canvases with groups.

The reference is slow (that is why it was replaced), so the suite runs it on a share of
those canvases chosen to cover every path (blocks in and outside groups, note-by-note
places, the fallbacks, fixed sizes, nodes added between requests, Chinese canvases);
`bench/canvas_place.py --check` runs it on all of them.
"""

from __future__ import annotations

import functools
from typing import Any

import pytest

from fanout.canvas.layout import Layout
from tests.benches import bench_module

#: cheap for the reference, and between them every path of `Layout.place`
NAMED = (
    "bench-4",  # bench/canvas.py's questions and answers, 4 agents
    "思维导图-2",
    "原系统-4",
    "架构图-2",  # nested groups, file and link nodes
    "便签-2",
    "时间线-4",
    "两个节点-4",
    "讲义-4",
    "数据结构",  # `make demo`'s canvases
    "test-review",  # the original system's fixtures
)
#: seeds of bench/canvas_place.py's small random canvases (groups, nested groups, fixed
#: sizes, nodes added between requests) that the reference places in well under a second
SMALL = (0, 1, 4, 8, 9, 10, 11, 13, 15, 16, 17, 19, 20, 21, 24, 25, 26, 27)
EXPECTED = {*NAMED, *(f"small-{k}" for k in SMALL)}


@functools.cache
def _cases() -> list[Any]:
    place = bench_module("canvas_place")
    return list(place.cases(0, names=EXPECTED, bench=(4,), small=max(SMALL) + 1))


def test_every_case_is_there() -> None:
    """The cases below are really planned (a renamed canvas would silently drop out)."""
    assert {case.name for case in _cases()} == EXPECTED


@pytest.mark.parametrize("group", ["named", "small"])
def test_same_places_as_the_reference(group: str) -> None:
    place = bench_module("canvas_place")
    reference = bench_module("canvas_layout_reference").Layout
    checked = 0
    for case in _cases():
        if case.name.startswith("small-") != (group == "small"):
            continue
        ours = place.plan(case, Layout)
        assert ours == place.plan(case, reference), case.name
        assert len(ours) == case.notes
        checked += len(ours)
    assert checked >= 30
