"""The Obsidian vault around a canvas: its root, vault-relative paths, reading notes safely.

The vault root is the nearest ancestor of the canvas holding `.obsidian/`, else the canvas's
own folder. File nodes name files by vault-relative POSIX paths (`folder/note.md`). A path
that would leave the vault (`..`, absolute, a symlink pointing out) is never read or written.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

_HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")


def find_vault_root(canvas_path: str | Path) -> Path:
    """The nearest ancestor folder with `.obsidian/`, else the canvas's folder (absolute)."""
    folder = Path(os.path.abspath(canvas_path)).parent
    for candidate in (folder, *folder.parents):
        if (candidate / ".obsidian").is_dir():
            return candidate
    return folder


def is_inside(root: Path, path: Path) -> bool:
    """True if `path`, with symlinks resolved, is `root` or below it."""
    try:
        real_root = root.resolve()
        return path.resolve().is_relative_to(real_root)
    except (OSError, RuntimeError):
        return False


def resolve_in_vault(root: Path, vault_path: str) -> Path | None:
    """The file a vault-relative path names, or None if it is absolute or leaves the vault."""
    if not vault_path or "\x00" in vault_path:
        return None
    pure = PurePosixPath(vault_path.replace("\\", "/"))
    if pure.is_absolute() or re.match(r"^[A-Za-z]:", vault_path) or ".." in pure.parts:
        return None
    path = root.joinpath(*pure.parts)
    return path if is_inside(root, path) else None


def vault_path(root: Path, path: Path) -> str:
    """`path` relative to the vault root, with forward slashes (as file nodes store it)."""
    rel = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(root)))
    return rel.as_posix()


def read_note(root: Path, vault_rel: str, subpath: str | None = None) -> str | None:
    """A note's text (only the section under `subpath`'s heading if given), or None."""
    path = resolve_in_vault(root, vault_rel)
    if path is None or not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    if subpath and subpath.startswith("#") and not subpath.startswith("#^"):
        section = heading_section(text, subpath[1:])
        if section is not None:
            return section
    return text


def heading_section(text: str, heading: str) -> str | None:
    """The lines under a Markdown heading, down to the next heading of its level or higher."""
    wanted = heading.split("#")[-1].strip().casefold()
    lines = text.splitlines()
    for start, line in enumerate(lines):
        match = _HEADING.match(line)
        if not match or match.group(2).strip().casefold() != wanted:
            continue
        level = len(match.group(1))
        end = len(lines)
        for offset, later in enumerate(lines[start + 1 :], start + 1):
            other = _HEADING.match(later)
            if other and len(other.group(1)) <= level:
                end = offset
                break
        return "\n".join(lines[start:end]).strip()
    return None
