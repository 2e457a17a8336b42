"""Where fanout keeps its own files (the run store, canvas backups and locks), decided once."""

from __future__ import annotations

import os
import sys
from pathlib import Path


def data_dir() -> Path:
    """`FANOUT_HOME`, else the platform's user data dir."""
    if home := os.environ.get("FANOUT_HOME"):
        return Path(home).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "fanout"
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA")
        return (Path(base) if base else Path.home() / "AppData" / "Local") / "fanout"
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "fanout"
