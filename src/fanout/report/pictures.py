"""Write a run's timeline pictures (`--html`, `--png`, `--trace`) from the store.

Every target is checked before anything is drawn (its folder exists, it is not a folder,
matplotlib is there for a PNG), so bad input writes nothing. Each file is written next to
its target under a temporary name and renamed over it: an interrupted write never leaves a
half picture, nor truncates the file it replaces before the new one is complete.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from pathlib import Path

from fanout.errors import ConfigError
from fanout.report.timeline import Timeline, load_timeline


def _check_target(flag: str, path: Path) -> None:
    if path.is_dir():
        raise ConfigError(f"{flag} {path}: is a folder; give a file name, e.g. {path}/run.out")
    if not path.parent.is_dir():
        raise ConfigError(f"{flag} {path}: folder {path.parent} does not exist; create it first")


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # a new file gets the mode open() would give it, not mkstemp's 0600
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_umask()
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_pictures(
    tl: Timeline, *, html: Path | None = None, png: Path | None = None, trace: Path | None = None
) -> list[str]:
    """Write the pictures asked for; returns one line per file written."""
    for flag, path in (("--html", html), ("--png", png), ("--trace", trace)):
        if path is not None:
            _check_target(flag, path)
    if png is not None:
        from fanout.report.png import pyplot

        pyplot()  # raises the one-line "install fanout[report]" before anything is written
    lines: list[str] = []
    if html is not None:
        from fanout.report.html import render_html

        data = render_html(tl).encode("utf-8")
        write_atomic(html, data)
        lines.append(f"wrote {html} ({len(data) / 1e6:.1f} MB, {len(tl.bars):,} attempts)")
    if png is not None:
        from fanout.report.png import write_png

        fd, tmp = tempfile.mkstemp(prefix=f".{png.name}.", suffix=".png", dir=png.parent)
        os.close(fd)
        try:
            write_png(tl, Path(tmp))
            write_atomic(png, Path(tmp).read_bytes())
        finally:
            Path(tmp).unlink(missing_ok=True)
        lines.append(f"wrote {png}")
    if trace is not None:
        from fanout.report.trace import render_trace

        write_atomic(trace, render_trace(tl).encode("utf-8"))
        lines.append(f"wrote {trace} (open it in https://ui.perfetto.dev or chrome://tracing)")
    return lines


def run_pictures(
    db: sqlite3.Connection,
    run_id: str,
    *,
    html: Path | None = None,
    png: Path | None = None,
    trace: Path | None = None,
) -> list[str]:
    tl = load_timeline(db, run_id)
    if tl is None:
        raise ConfigError(f"no run {run_id} in the store; see fanout runs")
    return write_pictures(tl, html=html, png=png, trace=trace)
