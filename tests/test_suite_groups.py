"""The xdist groups of tests/conftest.py: the Ray tests share one worker (one local
cluster), and the tests that count 429s or compare timings do not run beside each other."""

from __future__ import annotations

import pytest

from tests.conftest import TESTS, _group_of, xdist_scope


def test_ray_tests_and_rate_counting_tests_are_grouped_by_path() -> None:
    assert _group_of(TESTS / "ray" / "test_cluster.py") == "ray"
    assert _group_of(TESTS / "ray" / "子目录" / "test_任务.py") == "ray"
    assert _group_of(TESTS / "engine" / "test_limits.py") == "rate-counts"
    assert _group_of(TESTS / "engine" / "test_limits.py", "test_x[参数]") == "rate-counts"
    # of the HTTP engine's tests only the 429 storm counts 429s
    http = TESTS / "e2e" / "test_http_engine.py"
    assert _group_of(http, "test_429_storm_ends_done_and_honours_retry_after") == "rate-counts"
    assert _group_of(http, "test_5xx_bursts_end_done") is None
    assert _group_of(http) is None
    assert _group_of(TESTS / "engine" / "test_tasks.py") is None
    assert _group_of(TESTS / "rays" / "test_x.py") is None
    assert _group_of(TESTS.parent / "bench" / "ray" / "test_x.py") is None


def test_collected_items_carry_their_group(request: pytest.FixtureRequest) -> None:
    own = request.node.get_closest_marker("xdist_group")
    assert own is None  # this file is in no group
    grouped = [
        i
        for i in request.session.items
        if i.path.name == "test_limits.py" or i.name.startswith("test_429_storm")
    ]
    for item in grouped:
        mark = item.get_closest_marker("xdist_group")
        assert mark is not None, item.nodeid
        assert mark.args == ("rate-counts",)


def test_a_group_is_one_unit_of_work_and_other_tests_go_one_by_one() -> None:
    root = TESTS.parent
    a = xdist_scope(root, "tests/ray/test_cluster.py::test_one")
    b = xdist_scope(root, "tests/ray/test_tasks.py::test_two[参数]")
    assert a == b == "group:ray"
    limits = xdist_scope(root, "tests/engine/test_limits.py::test_x")
    assert limits == xdist_scope(root, "tests/e2e/test_http_engine.py::test_429_storm_y")
    other = "tests/e2e/test_http_engine.py::test_5xx_bursts_end_done"
    assert xdist_scope(root, other) == other
    plain = "tests/engine/test_tasks.py::test_z[1]"
    assert xdist_scope(root, plain) == plain
    assert xdist_scope(root, plain + "@mine") == "mine"


def test_the_rate_counting_files_run_alone(request: pytest.FixtureRequest) -> None:
    from tests.conftest import SOLO_GROUPS

    assert "rate-counts" in SOLO_GROUPS
    assert "ray" not in SOLO_GROUPS  # one worker of the parallel pass, beside the rest
    for item in request.session.items:
        solo = item.get_closest_marker("solo") is not None
        name = item.nodeid.split("::", 1)[1]
        assert solo == (_group_of(item.path, name) == "rate-counts"), item.nodeid
