"""Reading and writing `.canvas` files: strict about what is not a canvas, lenient inside one.

Not UTF-8, not JSON, not a JSON object, `nodes`/`edges` that are not arrays, or two nodes
(or two edges) with one id: one `InputError` naming the file and the line/column or id.
Everything else (malformed nodes, dangling edges, duplicate keys, unknown keys) is kept
as it is and reported in `Canvas.warnings`. Also refused: anything but a regular file (a
FIFO would block the read forever), a number that overflows to infinity (it could not be
written back), a value nested deeper than `MAX_DEPTH` (no recursion error anywhere later).

Writing keeps the file's own bytes: `dumps_canvas` edits the text the canvas was parsed
from (`canvas.textmodel`), so an unchanged node or edge is written back byte for byte.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from pathlib import Path
from typing import Any

from fanout.canvas import textmodel
from fanout.canvas.model import Canvas, CanvasStyle, CanvasWarning, check_structure
from fanout.errors import InputError

#: deeper than this is no canvas a tool wrote (Obsidian's nodes are 3 levels down)
MAX_DEPTH = 100


def check_canvas_path(path: str | Path) -> Path:
    """`path` if it is a regular file we may read; `InputError` (one line) if not.

    Checked without opening the file: opening a FIFO for reading blocks until a writer comes.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise InputError(f"{path}: no such canvas file") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise InputError(
                f"{path}: a loop of symbolic links, not a canvas file; point the link at the file"
            ) from None
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{path}: is a folder, not a canvas file")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(
            f"{path}: is a {_file_kind(info.st_mode)}, not a regular file; give a .canvas file"
        )
    return path


def load_canvas(path: str | Path) -> Canvas:
    """Read and parse a canvas file; `InputError` if it cannot be used."""
    path = check_canvas_path(path)
    try:
        # O_NONBLOCK: had the file been swapped for a FIFO since the check, do not hang on it
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InputError(f"{path}: not a regular file; give a .canvas file")
        with os.fdopen(fd, "rb", closefd=False) as file:
            data = file.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    return parse_canvas(data, path=path)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def parse_canvas(source: bytes | str, *, path: str | Path | None = None) -> Canvas:
    """Parse canvas text (or UTF-8 bytes); `path` names the file in messages and titles it."""
    where = str(path) if path is not None else "<canvas>"
    text, bom = _decode(source, where)
    warnings: list[CanvasWarning] = []
    source_text: textmodel.SourceText | None = None
    if not text.strip():
        warnings.append(CanvasWarning("empty-file", f"{where} is empty; read as an empty canvas"))
        data: Any = {}
    else:
        try:
            # one pass: the value and the span of each node and edge, for the write
            source_text, data = textmodel.scan(
                text, bom=bom, decoder=_decoder(text, where, warnings)
            )
        except (textmodel.NotAnObject, ValueError, RecursionError):
            # not a JSON object, or not JSON: json's own parse says which, and where
            warnings.clear()
            data = _loads(text, where, warnings)
        if source_text is not None:
            warnings.extend(_duplicate(where, key) for key in source_text.duplicates)
        _check_depth(data, where)
    if not isinstance(data, dict):
        raise InputError(f"{where}: a canvas is a JSON object, this file holds {_kind(data)}")
    for key in ("nodes", "edges"):
        if key in data and not isinstance(data[key], list):
            raise InputError(f"{where}: `{key}` must be an array, found {_kind(data[key])}")
    _check_unique_ids(data, where)
    canvas = Canvas(
        data,
        path=Path(path) if path is not None else None,
        style=_style_of(
            text, has_content=bool(data.get("nodes") or data.get("edges")), source=source_text
        ),
        warnings=warnings,
    )
    canvas.warnings.extend(check_structure(canvas))
    return canvas


def dumps_canvas(canvas: Canvas) -> str:
    """The canvas as JSON text: the file's own text with our changes, else in its indentation.

    A canvas parsed from text is written as edits to that text (original bytes for every
    unchanged node and edge, new ones in the file's style); one made in memory, or changed
    beyond adding and editing elements, is written whole (tabs, as Obsidian, for new files).
    """
    style = canvas.style
    if style.source is not None:
        edited = textmodel.render(canvas.data, style.source)
        if edited is not None:
            return edited
        return textmodel.render_whole(canvas.data, style.source, style.trailing_newline)
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


def _decode(source: bytes | str, where: str) -> tuple[str, bool]:
    """The text without its BOM, and whether it had one (the write puts it back)."""
    if isinstance(source, str):
        return source.removeprefix("\ufeff"), source.startswith("\ufeff")
    try:
        text = source.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = source.count(b"\n", 0, exc.start) + 1
        raise InputError(f"{where}:{line}: not UTF-8 text (byte {exc.start})") from None
    return text.removeprefix("\ufeff"), text.startswith("\ufeff")


def _float_of(text: str, where: str) -> Any:
    def parse(spelling: str) -> float:
        value = float(spelling)
        if math.isinf(value):
            line = text.count("\n", 0, max(text.find(spelling), 0)) + 1
            raise _Refused(
                f"{where}:{line}: the number {spelling[:40]} is too large (it overflows to "
                "infinity and could not be written back); write a smaller number"
            )
        return value

    return parse


class _Refused(ValueError):
    """A number the canvas cannot hold; its message is the whole one-line explanation."""


def _check_depth(data: Any, where: str) -> None:
    """Refuse values nested deeper than `MAX_DEPTH`: nothing after this recurses too far.

    (json itself stops near 1,000 levels with a RecursionError; `copy.deepcopy` or a
    caller's own walk could stop earlier.) Walked with a stack, not by recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)] if isinstance(data, dict | list) else []
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise InputError(_too_deep(where))
        for child in value.values() if type(value) is dict else value:
            kind = type(child)  # json makes plain dicts and lists: the fast test is enough
            if (kind is dict or kind is list) and child:
                stack.append((child, depth + 1))


def _too_deep(where: str) -> str:
    return (
        f"{where}: a value is nested more than {MAX_DEPTH} levels deep, which no canvas "
        "needs; flatten or remove it"
    )


def _duplicate(where: str, key: str) -> CanvasWarning:
    # JSON.parse (Obsidian) keeps the last one too; say so instead of hiding it
    return CanvasWarning(
        "duplicate-key",
        f"{where}: key {key!r} appears twice in an object; the last value is kept",
    )


def _decoder(text: str, where: str, warnings: list[CanvasWarning]) -> json.JSONDecoder:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj:
                warnings.append(_duplicate(where, key))
            obj[key] = value
        return obj

    def constant(name: str) -> float:
        raise ValueError(f"{name} is not JSON")

    return json.JSONDecoder(
        object_pairs_hook=pairs, parse_constant=constant, parse_float=_float_of(text, where)
    )


def _loads(text: str, where: str, warnings: list[CanvasWarning]) -> Any:
    try:
        return _decoder(text, where, warnings).decode(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
    except _Refused as exc:
        raise InputError(str(exc)) from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # over Python's 4,300 digits
            raise InputError(
                f"{where}: an integer of more than 4,300 digits; shorten it or write it as a string"
            ) from None
        # NaN / Infinity
        raise InputError(f"{where}: not valid JSON: {exc}") from None
    except RecursionError:
        raise InputError(_too_deep(where)) from None


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


def _style_of(
    text: str, *, has_content: bool, source: textmodel.SourceText | None = None
) -> CanvasStyle:
    trailing = text.endswith("\n") or not text.strip()
    newline = text.find("\n")
    if newline < 0 or not text[newline + 1 :].strip():
        # one line: minified if it holds anything, else (e.g. "{}") Obsidian's tabs
        return CanvasStyle(
            indent=None if has_content else "\t", trailing_newline=trailing, source=source
        )
    rest = text[newline + 1 :]
    indent = rest[: len(rest) - len(rest.lstrip(" \t"))]
    return CanvasStyle(indent=indent or "\t", trailing_newline=trailing, source=source)


def _kind(value: object) -> str:
    """What a JSON value is, with its article: "an array", "a string", "null"."""
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    return "an object"
