"""Reading and writing `.canvas` files: strict about what is not a canvas, lenient inside one.

Not UTF-8, not JSON, not a JSON object, `nodes`/`edges` that are not arrays, or two nodes
(or two edges) with one id: one `InputError` naming the file and the line/column or id.
Everything else (malformed nodes, dangling edges, duplicate keys, unknown keys) is kept
as it is and reported in `Canvas.warnings`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fanout.canvas.model import Canvas, CanvasStyle, CanvasWarning, check_structure
from fanout.errors import InputError


def load_canvas(path: str | Path) -> Canvas:
    """Read and parse a canvas file; `InputError` if it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: no such canvas file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a canvas file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return parse_canvas(data, path=path)


def parse_canvas(source: bytes | str, *, path: str | Path | None = None) -> Canvas:
    """Parse canvas text (or UTF-8 bytes); `path` names the file in messages and titles it."""
    where = str(path) if path is not None else "<canvas>"
    text = _decode(source, where)
    warnings: list[CanvasWarning] = []
    if not text.strip():
        warnings.append(CanvasWarning("empty-file", f"{where} is empty; read as an empty canvas"))
        data: Any = {}
    else:
        data = _loads(text, where, warnings)
    if not isinstance(data, dict):
        raise InputError(f"{where}: a canvas is a JSON object, this file holds a {_kind(data)}")
    for key in ("nodes", "edges"):
        if key in data and not isinstance(data[key], list):
            raise InputError(f"{where}: `{key}` must be an array, found a {_kind(data[key])}")
    _check_unique_ids(data, where)
    canvas = Canvas(
        data,
        path=Path(path) if path is not None else None,
        style=_style_of(text, has_content=bool(data.get("nodes") or data.get("edges"))),
        warnings=warnings,
    )
    canvas.warnings.extend(check_structure(canvas))
    return canvas


def dumps_canvas(canvas: Canvas) -> str:
    """The canvas as JSON text in the file's own indentation (tabs, as Obsidian, for new files)."""
    style = canvas.style
    separators = (",", ": ") if style.indent is not None else (",", ":")
    try:
        text = json.dumps(
            canvas.data,
            ensure_ascii=False,
            indent=style.indent,
            separators=separators,
            allow_nan=False,
        )
        text.encode("utf-8")
    except UnicodeEncodeError:
        # a lone surrogate (legal in JSON as an escape) cannot be UTF-8: keep it escaped
        text = json.dumps(
            canvas.data, ensure_ascii=True, indent=style.indent, separators=separators
        )
    return text + "\n" if style.trailing_newline else text


def dump_bytes(canvas: Canvas) -> bytes:
    return dumps_canvas(canvas).encode("utf-8")


def _decode(source: bytes | str, where: str) -> str:
    if isinstance(source, str):
        return source
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{where}:{line}: not UTF-8 text (byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def _loads(text: str, where: str, warnings: list[CanvasWarning]) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                # JSON.parse (Obsidian) keeps the last one too; say so instead of hiding it
                warnings.append(
                    CanvasWarning(
                        "duplicate-key",
                        f"{where}: key {key!r} appears twice in an object; the last value is kept",
                    )
                )
            obj[key] = value
        return obj

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except ValueError as exc:  # NaN / Infinity
        raise InputError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(f"{where}: not a canvas: nested too deeply") from None


def _check_unique_ids(data: dict[str, Any], where: str) -> None:
    for key, what in (("nodes", "node"), ("edges", "edge")):
        seen: dict[str, int] = {}
        for index, item in enumerate(data.get(key) or []):
            item_id = item.get("id") if isinstance(item, dict) else None
            if not isinstance(item_id, str):
                continue
            if item_id in seen:
                raise InputError(
                    f"{where}: two {what}s have the id {item_id!r} "
                    f"({key}[{seen[item_id]}] and {key}[{index}]); ids must be unique"
                )
            seen[item_id] = index


def _style_of(text: str, *, has_content: bool) -> CanvasStyle:
    trailing = text.endswith("\n") or not text.strip()
    newline = text.find("\n")
    if newline < 0 or not text[newline + 1 :].strip():
        # one line: minified if it holds anything, else (e.g. "{}") Obsidian's tabs
        return CanvasStyle(indent=None if has_content else "\t", trailing_newline=trailing)
    rest = text[newline + 1 :]
    indent = rest[: len(rest) - len(rest.lstrip(" \t"))]
    return CanvasStyle(indent=indent or "\t", trailing_newline=trailing)


def _kind(value: object) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return "object"
