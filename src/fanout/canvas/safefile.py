"""Files that are never half-written: the canvas lock, atomic replace, backups.

- The data dir is `$FANOUT_HOME`, else the user data dir (`$XDG_DATA_HOME/fanout` or
  `~/.local/share/fanout`; `~/Library/Application Support/fanout` on macOS). Nothing of ours
  goes into the vault but the notes and the canvas (and, for a moment, hidden temp files).
- One lock per canvas: `fcntl.flock` on `<data>/locks/<key>.lock`, where key is the canvas's
  name plus a hash of its real path. It holds across processes and threads, and the OS
  releases it when a process dies, even by SIGKILL.
- Atomic write: a hidden temp file in the same folder, fsync, `os.replace` (or, on Linux, an
  atomic exchange that hands back what was there), fsync of the folder.
- Backups: `<data>/canvas-backups/<key>/<seq>-<UTC time>[-<run id>].canvas`, the last `keep`
  of them, and always the first of each of the last `keep` runs: restoring a run puts back
  the canvas as it was before the run's first write, however many writes it made.
- What was written: `<data>/canvas-written/<key>.json`, the ids of the nodes and edges
  fanout has put on the canvas, so one the learner deleted is not put back by a rerun.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from fanout.canvas.model import CanvasWriteError
from fanout.canvas.naming import safe_component
from fanout.errors import InputError
from fanout.paths import data_dir

DEFAULT_LOCK_TIMEOUT_S = 30.0
DEFAULT_KEEP_BACKUPS = 20
_TMP_MARK = ".fanout-tmp-"


def canvas_key(canvas_path: str | Path) -> str:
    """A folder/file name for one canvas: its stem plus a hash of its real path."""
    real = os.path.realpath(canvas_path)
    digest = hashlib.sha256(real.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return f"{safe_component(Path(real).stem, max_bytes=60, fallback='canvas')}-{digest}"


def lock_path(canvas_path: str | Path, base: Path | None = None) -> Path:
    return (base or data_dir()) / "locks" / f"{canvas_key(canvas_path)}.lock"


@contextlib.contextmanager
def canvas_lock(
    canvas_path: str | Path, *, timeout: float = DEFAULT_LOCK_TIMEOUT_S, base: Path | None = None
) -> Iterator[Path]:
    """Hold the canvas's cross-process lock; `CanvasWriteError` after `timeout` seconds."""
    path = lock_path(canvas_path, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise CanvasWriteError(
                        f"{canvas_path}: another fanout process has been writing this canvas "
                        f"for {timeout:g} s (lock {path}); try again later"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
        try:
            yield path
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_path(path: Path) -> Path:
    """A hidden temp file beside `path` (Obsidian ignores dot files)."""
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{time.monotonic_ns()}")


def write_temp(path: Path, data: bytes) -> Path:
    """`data` in a fresh temp file beside `path`, flushed to disk; its path."""
    tmp = temp_path(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.close(fd)
    with contextlib.suppress(OSError):  # a replaced file keeps its mode; a new one: umask's
        os.chmod(tmp, path.stat().st_mode & 0o777)
    return tmp


def cannot_write_in(folder: Path) -> str | None:
    """Why no file can be created in `folder` (None: one can), found by creating and
    removing a hidden probe file: permissions, a read-only mount, a full quota alike."""
    probe = folder / f".fanout-probe{_TMP_MARK}{os.getpid()}-{time.monotonic_ns()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.strerror or str(exc)
    os.close(fd)
    with contextlib.suppress(OSError):
        probe.unlink()
    return None


def remove_stale_temps(path: Path, *, min_age_s: float = 0.0) -> None:
    """Temp files a killed writer left beside `path` (call under the canvas lock).

    `path` may be a folder: then every temp file of ours in it at least `min_age_s` old.
    """
    if path.is_dir():
        folder, pattern = path, f".*{_TMP_MARK}*"
    else:
        folder, pattern = path.parent, f".{_glob_escape(path.name)}{_TMP_MARK}*"
    now = time.time()
    with contextlib.suppress(OSError):
        for leftover in folder.glob(pattern):
            with contextlib.suppress(OSError):
                if now - leftover.lstat().st_mtime >= min_age_s:
                    leftover.unlink()


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def atomic_write(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so a reader sees the old or the new file, never a mix."""
    tmp = write_temp(path, data)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_libc: ctypes.CDLL | None = None
_exchange_ok = sys.platform.startswith("linux")
# the file systems (st_dev) already said to lack the exchange: once each, so a long-lived
# process (the service) still says it for a second vault on another file system
_said_no_exchange: set[int] = set()
log = logging.getLogger(__name__)


def _no_exchange(path: Path) -> bool:
    """Say once per file system that the swap that hands back a concurrent edit is not
    available there: the caller replaces the file after its last check, and an edit saved in
    that instant by a program that does not take our lock (an editor) would be overwritten."""
    try:
        device = path.parent.stat().st_dev
    except OSError:
        device = -1
    if device not in _said_no_exchange:
        _said_no_exchange.add(device)
        log.warning(
            "fanout: %s: this file system cannot swap files atomically (renameat2); an edit"
            " saved by another program in the instant fanout writes the canvas could be lost"
            " (edits saved before are merged, and other fanout processes wait for the lock)",
            path,
        )
    return False


def exchange(tmp: Path, path: Path) -> bool:
    """Atomically swap two files (Linux renameat2 RENAME_EXCHANGE); False if unsupported.

    After it, `path` holds the new content and `tmp` what `path` held at that instant, so a
    write that slipped in between our last check and the swap is handed back, not lost.
    """
    global _libc, _exchange_ok
    if not _exchange_ok:
        return _no_exchange(path)
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        func = _libc.renameat2
    except (OSError, AttributeError):
        _exchange_ok = False
        return _no_exchange(path)
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(path), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return _no_exchange(path)  # this file system cannot: the caller uses os.replace
    raise OSError(err, os.strerror(err), str(path))


def backup_dir(canvas_path: str | Path, base: Path | None = None) -> Path:
    return (base or data_dir()) / "canvas-backups" / canvas_key(canvas_path)


def save_backup(
    canvas_path: Path,
    content: bytes,
    *,
    keep: int = DEFAULT_KEEP_BACKUPS,
    base: Path | None = None,
    run_id: str | None = None,
) -> Path | None:
    """Keep `content` (the canvas before a write of run `run_id`) as the newest backup;
    prune to `keep`, never dropping the first backup of one of the last `keep` runs."""
    if keep <= 0:
        return None
    folder = backup_dir(canvas_path, base)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "canvas-path.txt"
    if not source.exists():
        atomic_write(source, os.fsencode(os.path.realpath(canvas_path)) + b"\n")
    existing = list_backups(canvas_path, base=base)
    if existing and backup_run(existing[-1]) == run_id and existing[-1].read_bytes() == content:
        return existing[-1]
    # a sequence number first, so the order survives clocks that jump back
    seq = int(existing[-1].name.split("-", 1)[0]) + 1 if existing else 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    tail = f"-{safe_component(run_id, max_bytes=64)}" if run_id else ""
    target = folder / f"{seq:06d}-{stamp}{tail}.canvas"
    atomic_write(target, content)
    backups = list_backups(canvas_path, base=base)
    firsts: dict[str, Path] = {}
    for b in backups:
        run = backup_run(b)
        if run is not None:
            firsts.setdefault(run, b)
    protected = set(list(firsts.values())[-keep:])
    for old in backups[:-keep]:
        if old not in protected:
            with contextlib.suppress(OSError):
                old.unlink()
    return target


def backup_run(backup: Path) -> str | None:
    """The run whose write a backup was taken before (None: a write outside any run)."""
    parts = backup.name.removesuffix(".canvas").split("-", 2)
    return parts[2] if len(parts) == 3 and parts[2] else None


def backup_time(backup: Path) -> str:
    """When a backup was taken, as `YYYY-MM-DD HH:MM:SS UTC`."""
    stamp = backup.name.split("-", 2)[1] if backup.name.count("-") >= 1 else ""
    try:
        when = datetime.strptime(stamp.removesuffix(".canvas"), "%Y%m%dT%H%M%S%fZ")
    except ValueError:
        return "?"
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def run_start_backup(canvas_path: str | Path, run_id: str, *, base: Path | None = None) -> Path:
    """The backup taken before run `run_id`'s first write of the canvas (`InputError` if
    the run wrote none); a prefix of the run id is enough when it names one run."""
    backups = list_backups(canvas_path, base=base)
    runs = list(dict.fromkeys(r for b in backups if (r := backup_run(b)) is not None))
    matching = [r for r in runs if r == run_id] or [r for r in runs if r.startswith(run_id)]
    if len(matching) != 1:
        known = ", ".join(runs[-5:]) or "none"
        what = "no" if not matching else f"{len(matching)} runs match, ambiguous:"
        raise InputError(
            f"{canvas_path}: {what} backup of run {run_id!r} (runs with backups: {known}); "
            "see fanout canvas restore --list"
        )
    return next(b for b in backups if backup_run(b) == matching[0])


def written_path(canvas_path: str | Path, base: Path | None = None) -> Path:
    return (base or data_dir()) / "canvas-written" / f"{canvas_key(canvas_path)}.json"


def read_written(canvas_path: str | Path, base: Path | None = None) -> tuple[set[str], set[str]]:
    """The ids of the nodes and edges fanout has written on the canvas (call under its
    lock); empty if none or if the record cannot be read (then nothing counts as deleted)."""
    try:
        data = json.loads(written_path(canvas_path, base).read_text(encoding="utf-8"))
        nodes, edges = data["nodes"], data["edges"]
        return {str(n) for n in nodes}, {str(e) for e in edges}
    except (OSError, ValueError, KeyError, TypeError):
        return set(), set()


def record_written(
    canvas_path: str | Path,
    nodes: set[str],
    edges: set[str],
    *,
    base: Path | None = None,
    replace: bool = False,
) -> None:
    """Add these ids to the record (or, with `replace`, make them the record)."""
    old_nodes, old_edges = (set(), set()) if replace else read_written(canvas_path, base)
    all_nodes, all_edges = old_nodes | nodes, old_edges | edges
    if not replace and (all_nodes, all_edges) == (old_nodes, old_edges):
        return
    path = written_path(canvas_path, base)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"nodes": sorted(all_nodes), "edges": sorted(all_edges)}
    atomic_write(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))


def list_backups(canvas_path: str | Path, *, base: Path | None = None) -> list[Path]:
    """The canvas's backups, oldest first."""
    folder = backup_dir(canvas_path, base)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("[0-9]*-*.canvas") if p.is_file())


def restore(
    canvas_path: str | Path,
    backup: str | Path | None = None,
    *,
    run_id: str | None = None,
    base: Path | None = None,
    keep: int = DEFAULT_KEEP_BACKUPS,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Path:
    """Put a backup back in place of the canvas; the backup used.

    Default: the canvas as it was before the latest run's first write (a run may write
    several times: all of it is undone); `run_id` picks the run; `backup` one file (a path
    or a name in the canvas's backup folder). The canvas as it is now is backed up first,
    so a restore can itself be undone. Ids of ours the restored canvas does not hold are
    forgotten, so a rerun writes them again.
    """
    from fanout.canvas.io import parse_canvas  # io imports nothing from here; keep it lazy

    path = Path(os.path.realpath(canvas_path))
    backups = list_backups(path, base=base)
    if run_id is not None:
        chosen = run_start_backup(path, run_id, base=base)
    elif backup is None:
        if not backups:
            raise InputError(f"{path}: no backups in {backup_dir(path, base)}")
        chosen = backups[-1]
        latest = backup_run(chosen)
        if latest is not None:
            chosen = run_start_backup(path, latest, base=base)
    else:
        chosen = Path(backup)
        if not chosen.is_absolute() or not chosen.exists():
            chosen = backup_dir(path, base) / Path(backup).name
        if not chosen.is_file():
            raise InputError(f"{path}: no backup {str(backup)!r} in {backup_dir(path, base)}")
    content = chosen.read_bytes()
    restored = parse_canvas(content, path=chosen)  # never put back what is not a canvas
    with canvas_lock(path, timeout=lock_timeout, base=base):
        nodes, edges = read_written(path, base)
        present = {n.id for n in restored.nodes} | {e.id for e in restored.edges}
        if (nodes | edges) - present:
            record_written(path, nodes & present, edges & present, base=base, replace=True)
        remove_stale_temps(path)
        if path.exists():
            current = path.read_bytes()
            if current == content:
                return chosen
            save_backup(path, current, keep=keep + 1, base=base)
        atomic_write(path, content)
        if path.read_bytes() != content:
            raise CanvasWriteError(f"{path}: restored file does not read back as the backup")
    return chosen
