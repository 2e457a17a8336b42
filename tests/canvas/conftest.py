"""Every canvas test keeps fanout's data dir (locks, backups) in its own temp folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def fanout_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "数据目录"
    monkeypatch.setenv("FANOUT_HOME", str(home))
    return home


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    root = tmp_path / "我的知识库"
    (root / ".obsidian").mkdir(parents=True)
    (root / ".obsidian" / "app.json").write_text("{}", encoding="utf-8")
    return root
