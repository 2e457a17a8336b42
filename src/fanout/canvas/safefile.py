"""Files that are never half-written: the canvas lock, atomic replace, backups.

- The data dir is `$FANOUT_HOME`, else the user data dir (`$XDG_DATA_HOME/fanout` or
  `~/.local/share/fanout`; `~/Library/Application Support/fanout` on macOS). Nothing of ours
  goes into the vault but the notes and the canvas (and, for a moment, hidden temp files).
- One lock per canvas: `fcntl.flock` on `<data>/locks/<key>.lock`, where key is the canvas's
  name plus a hash of its real path. It holds across processes and threads, and the OS
  releases it when a process dies, even by SIGKILL.
- Atomic write: a hidden temp file in the same folder, fsync, `os.replace` (or, on Linux, an
  atomic exchange that hands back what was there), fsync of the folder.
- Backups: `<data>/canvas-backups/<key>/<seq>-<UTC time>.canvas`, the last `keep` of them.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
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


def exchange(tmp: Path, path: Path) -> bool:
    """Atomically swap two files (Linux renameat2 RENAME_EXCHANGE); False if unsupported.

    After it, `path` holds the new content and `tmp` what `path` held at that instant, so a
    write that slipped in between our last check and the swap is handed back, not lost.
    """
    global _libc, _exchange_ok
    if not _exchange_ok:
        return False
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        func = _libc.renameat2
    except (OSError, AttributeError):
        _exchange_ok = False
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    if func(_AT_FDCWD, os.fsencode(tmp), _AT_FDCWD, os.fsencode(path), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False  # this file system cannot: the caller falls back to os.replace
    raise OSError(err, os.strerror(err), str(path))


def backup_dir(canvas_path: str | Path, base: Path | None = None) -> Path:
    return (base or data_dir()) / "canvas-backups" / canvas_key(canvas_path)


def save_backup(
    canvas_path: Path, content: bytes, *, keep: int = DEFAULT_KEEP_BACKUPS, base: Path | None = None
) -> Path | None:
    """Keep `content` (the canvas before a write) as the newest backup; prune to `keep`."""
    if keep <= 0:
        return None
    folder = backup_dir(canvas_path, base)
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "canvas-path.txt"
    if not source.exists():
        atomic_write(source, os.fsencode(os.path.realpath(canvas_path)) + b"\n")
    existing = list_backups(canvas_path, base=base)
    if existing and existing[-1].read_bytes() == content:
        return existing[-1]
    # a sequence number first, so the order survives clocks that jump back
    seq = int(existing[-1].name.split("-", 1)[0]) + 1 if existing else 1
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    target = folder / f"{seq:06d}-{stamp}.canvas"
    atomic_write(target, content)
    for old in list_backups(canvas_path, base=base)[:-keep]:
        with contextlib.suppress(OSError):
            old.unlink()
    return target


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
    base: Path | None = None,
    keep: int = DEFAULT_KEEP_BACKUPS,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT_S,
) -> Path:
    """Put a backup (default: the newest) back in place of the canvas; the backup used.

    The canvas as it is now is backed up first, so a restore can itself be undone.
    `backup` is a path or the name of a file in the canvas's backup folder.
    """
    from fanout.canvas.io import parse_canvas  # io imports nothing from here; keep it lazy

    path = Path(os.path.realpath(canvas_path))
    backups = list_backups(path, base=base)
    if backup is None:
        if not backups:
            raise InputError(f"{path}: no backups in {backup_dir(path, base)}")
        chosen = backups[-1]
    else:
        chosen = Path(backup)
        if not chosen.is_absolute() or not chosen.exists():
            chosen = backup_dir(path, base) / Path(backup).name
        if not chosen.is_file():
            raise InputError(f"{path}: no backup {str(backup)!r} in {backup_dir(path, base)}")
    content = chosen.read_bytes()
    parse_canvas(content, path=chosen)  # never put back something that is not a canvas
    with canvas_lock(path, timeout=lock_timeout, base=base):
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
