"""Every test gets its own fanout home (run store, cache): nothing reaches the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _fanout_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_HOME", str(tmp_path_factory.mktemp("fanout-home")))
