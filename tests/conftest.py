"""Every test gets its own fanout home (run store, cache): nothing reaches the user's."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# property tests: a quick pass locally, a thorough one in CI (CI=true), or pick one with
# HYPOTHESIS_PROFILE=dev|ci; a test's own @settings(max_examples=...) still wins
settings.register_profile("dev", max_examples=40)
settings.register_profile("ci", max_examples=200)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") == "true" else "dev")
)


@pytest.fixture(autouse=True)
def _fanout_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_HOME", str(tmp_path_factory.mktemp("fanout-home")))


# `make test` runs the suite on two pytest-xdist workers with `--dist loadgroup`: a group
# runs on one worker, one test after another. The Ray tests share one local cluster (one
# per worker would not fit in 2 cores); the tests that count 429s against a server's
# budget or compare timings of one run stay off each other's way. An entry is a path
# under tests/ (a folder, a file) or a file and the start of a test's name: of the HTTP
# engine's tests only the 429 storm counts 429s (its 5xx, timeout and restart runs have no
# budget to share, and run in the parallel pass).
TESTS = Path(__file__).resolve().parent
_GROUPS = {
    "ray": ("ray/",),
    "rate-counts": (
        "e2e/test_http_engine.py::test_429_storm",
        "e2e/test_shared_account.py",
        "engine/test_limits.py",
        "engine/test_429_vs_529.py",
    ),
}

#: groups `make test` runs after the rest, in one process: a test beside them on the other
#: worker takes CPU from the paced processes they measure (seen: a lone process that did
#: not take the whole budget back in its few seconds alone)
SOLO_GROUPS = ("rate-counts",)


#: the longest single tests, longest first (a minute or so each, mostly waiting on paced servers and
#: killed processes): sent to the workers first, so that the short ones fill in around them
#: instead of one of these starting last and running alone at the end of the pass
LONG_FIRST = (
    "e2e/test_soak.py",
    "e2e/test_batch_stream_kill.py",
    "e2e/test_crash.py",
    "e2e/test_outage.py",
)


def _group_of(path: Path, name: str = "") -> str | None:
    """The group of the test `name` (its node id after the file, "" for the file) in
    `path`."""
    rel = _rel(path)
    if not rel:
        return None
    if name:
        rel = f"{rel}::{name}"
    for group, prefixes in _GROUPS.items():
        if any(rel.startswith(p) for p in prefixes):
            return group
    return None


# first: xdist's worker reads the groups in its own hook of the same name, registered after
# this file, so called before it unless this one asks to go first
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        group = _group_of(item.path, _name(item.nodeid))
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
        if group in SOLO_GROUPS:
            item.add_marker(pytest.mark.solo)
    # stable: every worker collects the same order, as xdist requires
    items.sort(key=lambda item: _rank(_rel(item.path)))


def _rank(rel: str) -> int:
    return next((i for i, p in enumerate(LONG_FIRST) if rel.startswith(p)), len(LONG_FIRST))


def _rel(path: Path) -> str:
    try:
        return path.resolve().relative_to(TESTS).as_posix()
    except ValueError:
        return ""


@pytest.hookimpl(optionalhook=True, tryfirst=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadgroup` by the groups above, read from each test's path. xdist's own
    loadgroup reads the `xdist_group` mark through a node id it rewrites, which pytest 9
    no longer takes (every test then runs wherever, grouped or not)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    root = config.rootpath

    class PathGroups(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_scope(root, nodeid)

    return PathGroups(config, log)


def xdist_scope(root: Path, nodeid: str) -> str:
    """The unit of work a test goes to a worker in: its group, else the test alone."""
    if "@" in nodeid:  # a group xdist could read after all
        return nodeid.rsplit("@", 1)[-1]
    group = _group_of(root / nodeid.split("::", 1)[0], _name(nodeid))
    return nodeid if group is None else f"group:{group}"


def _name(nodeid: str) -> str:
    """What follows the file in a node id: `test_x[1]`, `Class::test_y`."""
    return nodeid.split("::", 1)[1] if "::" in nodeid else ""
