"""Every test gets its own fanout home (run store, cache): nothing reaches the user's."""

from __future__ import annotations

import os

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
