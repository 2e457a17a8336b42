"""The xdist groups of tests/conftest.py: the Ray tests share one worker (one local
cluster), and the tests that count 429s or compare timings do not run beside each other."""

from __future__ import annotations

import pytest

from tests.conftest import TESTS, _group_of


def test_ray_tests_and_rate_counting_tests_are_grouped_by_path() -> None:
    assert _group_of(TESTS / "ray" / "test_cluster.py") == "ray"
    assert _group_of(TESTS / "ray" / "子目录" / "test_任务.py") == "ray"
    assert _group_of(TESTS / "e2e" / "test_http_engine.py") == "rate-counts"
    assert _group_of(TESTS / "engine" / "test_limits.py") == "rate-counts"
    assert _group_of(TESTS / "engine" / "test_tasks.py") is None
    assert _group_of(TESTS / "rays" / "test_x.py") is None
    assert _group_of(TESTS.parent / "bench" / "ray" / "test_x.py") is None


def test_collected_items_carry_their_group(request: pytest.FixtureRequest) -> None:
    own = request.node.get_closest_marker("xdist_group")
    assert own is None  # this file is in no group
    grouped = [
        i for i in request.session.items if i.path.name in ("test_http_engine.py", "test_limits.py")
    ]
    for item in grouped:
        mark = item.get_closest_marker("xdist_group")
        assert mark is not None, item.nodeid
        assert mark.args == ("rate-counts",)
