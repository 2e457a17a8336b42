"""Finding blueprints: the package's built-ins, then the user's, then the project's.

A later source overrides an earlier one by name:

1. package: `fanout/agents/builtin/*.md`;
2. user: `$FANOUT_CONFIG_DIR/agents/`, else `$XDG_CONFIG_HOME/fanout/agents/`, else
   `~/.config/fanout/agents/`;
3. project: `.fanout/agents/` under the working directory (namespaced, so an unrelated
   `agents/` folder of a project is never read as blueprints).

In a directory, every `*.md` file is a blueprint except `README.md` and names starting
with `_` or `.`; a blueprint's name is its file name without `.md`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import replace
from importlib import resources
from pathlib import Path

from fanout.agents.blueprint import Blueprint, Origin, parse_blueprint
from fanout.errors import ConfigError

CONFIG_DIR_ENV = "FANOUT_CONFIG_DIR"
PROJECT_AGENTS_DIR = Path(".fanout") / "agents"
SUFFIX = ".md"


def user_agents_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where the user's own blueprints live (it need not exist)."""
    env = os.environ if env is None else env
    if base := env.get(CONFIG_DIR_ENV):
        return Path(base).expanduser() / "agents"
    if xdg := env.get("XDG_CONFIG_HOME"):
        return Path(xdg).expanduser() / "fanout" / "agents"
    return Path.home() / ".config" / "fanout" / "agents"


def project_agents_dir(cwd: Path | None = None) -> Path:
    """Where a project's blueprints live (it need not exist)."""
    return (cwd if cwd is not None else Path.cwd()) / PROJECT_AGENTS_DIR


def load_blueprint(path: Path, *, origin: Origin = "file") -> Blueprint:
    """Read one blueprint file. Raises `ConfigError` naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the blueprint ({exc.strerror})") from None
    return _parse(raw, path, origin)


def builtin_blueprints() -> dict[str, Blueprint]:
    """The blueprints shipped in the package, by name."""
    folder = resources.files("fanout.agents").joinpath("builtin")
    out: dict[str, Blueprint] = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if _is_blueprint_name(entry.name):
            bp = _parse(entry.read_bytes(), Path(str(entry)), "package")
            out[bp.name] = bp
    return out


def load_blueprints(
    project_dir: Path | None = None, user_dir: Path | None = None
) -> dict[str, Blueprint]:
    """All blueprints by name, sorted: package, then `user_dir`, then `project_dir`, a later
    one overriding an earlier one of the same name.

    `user_dir` and `project_dir` are the directories holding the `.md` files; by default
    `user_agents_dir()` and `project_agents_dir()`, skipped when they do not exist. A
    directory given explicitly must exist.
    """
    found = builtin_blueprints()
    layers: list[tuple[Path, Origin, bool]] = [
        (user_dir if user_dir is not None else user_agents_dir(), "user", user_dir is not None),
        (
            project_dir if project_dir is not None else project_agents_dir(),
            "project",
            project_dir is not None,
        ),
    ]
    for folder, origin, explicit in layers:
        if not folder.is_dir():
            if explicit:
                raise ConfigError(f"{folder}: no such blueprint directory")
            continue
        for bp in _read_dir(folder, origin):
            prior = found.get(bp.name)
            found[bp.name] = bp if prior is None else replace(bp, replaces=prior.source)
    return dict(sorted(found.items()))


def _read_dir(folder: Path, origin: Origin) -> Iterable[Blueprint]:
    try:
        paths = sorted(p for p in folder.iterdir() if _is_blueprint_name(p.name) and p.is_file())
    except OSError as exc:
        raise ConfigError(f"{folder}: cannot list the blueprints ({exc.strerror})") from None
    return [load_blueprint(p, origin=origin) for p in paths]


def _is_blueprint_name(name: str) -> bool:
    return (
        name.endswith(SUFFIX)
        and not name.startswith(("_", "."))
        and name.lower() != "readme" + SUFFIX
    )


def _parse(raw: bytes, path: Path, origin: Origin) -> Blueprint:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_blueprint(text, source=path, origin=origin, raw=raw)
