"""A canvas file's own text, kept beside the parsed model, so a write changes only what it must.

Obsidian writes a canvas tab-indented with one node or edge per line; other tools write it
tab- or space-pretty, or minified; with CRLF, a BOM, `\\u5355` escapes or `1.6e2` numbers.
A git diff of a learner's vault should show our additions and nothing else, so:

- `scan` parses the text once (json's own C scanner, element by element) and records the
  span of the top-level members and of every element of `nodes` and `edges`; what the file
  said (`pristine`) is parsed from the text again when a write needs it, never handed out,
  so whatever the caller changed in `Canvas.data`, we still know what the file said;
- `render` writes the canvas back as edits to the original text: an element strictly equal
  to its pristine value (types included: `1` is not `1.0`, `-0.0` is not `0.0`) is its own
  bytes; a changed element is patched member by member (only the changed values are
  rewritten); new elements are inserted before the array's `]` in the style of their
  neighbours (`TextStyle`). What cannot be said as such edits (an element removed, a
  top-level value changed) gives `None`, and the caller writes the whole file in its style.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from json.decoder import scanstring  # type: ignore[attr-defined]
from typing import Any

ARRAYS = ("nodes", "edges")
_WS = re.compile(r"[ \t\n\r]*")
_SEPARATOR = re.compile(r"[ \t\n\r]*,[ \t\n\r]*")
# an escape of a non-ASCII character, or an escaped backslash (skipped so `\\u00e9` is not one)
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)")
_LINE_INDENT = re.compile(r"\n([ \t]*)\S")


class _Mismatch(Exception):
    """The text is not shaped as `scan` expects (not an object, or not JSON there)."""


@dataclass(frozen=True, slots=True)
class Member:
    """`"key": value` of an object: where its key starts and its value starts and ends."""

    key: str
    key_start: int
    key_end: int
    value_start: int
    value_end: int


@dataclass(slots=True)
class ArraySpan:
    """The `nodes` or `edges` array: its brackets and its elements' spans."""

    open: int
    close: int
    items: list[tuple[int, int]]


class SourceText:
    """The text a canvas was parsed from, and where each of its pieces is.

    What the file said (`pristine`) is parsed again from the text the first time a write
    needs it, so it is never an object the caller could have changed.
    """

    def __init__(
        self,
        text: str,
        bom: bool,
        span: tuple[int, int],
        members: list[Member],
        arrays: dict[str, ArraySpan],
    ) -> None:
        self.text = text
        self.bom = bom
        #: the top-level object's `{` and `}`
        self.open, self.close = span
        self.members = members
        self.arrays = arrays
        #: top-level keys that are not the `nodes`/`edges` arrays (the last one of a name)
        self.other_keys = [m.key for m in members if m.key not in arrays]
        #: top-level keys the text holds more than once (json keeps the last value)
        self.duplicates: list[str] = []
        self._pristine: dict[str, Any] | None = None
        self._style: TextStyle | None = None

    @property
    def pristine(self) -> dict[str, Any]:
        if self._pristine is None:
            self._pristine = json.loads(self.text)
        return self._pristine

    def pristine_items(self, key: str) -> list[Any]:
        value = self.pristine.get(key)
        return value if isinstance(value, list) else []

    @property
    def style(self) -> TextStyle:
        if self._style is None:
            self._style = _detect_style(self)
        return self._style


@dataclass(frozen=True, slots=True)
class TextStyle:
    """How the file spells things, for what we add to it."""

    newline: str
    #: non-ASCII characters written as `\\uXXXX` (Python's `ensure_ascii`)
    ascii: bool
    #: one line for the whole document
    minified: bool
    #: elements of `nodes`/`edges` one per line, each a compact object (Obsidian)
    one_per_line: bool
    #: the indent unit of pretty-printed objects
    unit: str
    #: between a key and its value, and between members, inside an element
    key_sep: str
    item_sep: str


def scan(text: str, *, bom: bool, decoder: json.JSONDecoder) -> tuple[SourceText, Any]:
    """The spans of `text` and its value, parsed with `decoder`'s hooks.

    Raises what json raises for text that is not JSON, and `NotAnObject` for JSON that is
    not an object (or that this scan does not follow: the caller parses it plainly then).
    """
    scan_once = json.scanner.make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        return _scan(text, bom, scan_once)
    except (_Mismatch, StopIteration, IndexError):
        raise NotAnObject from None


class NotAnObject(Exception):
    """`scan` cannot follow this text (not an object, or not JSON where it looked)."""


def _ws(text: str, i: int) -> int:
    m = _WS.match(text, i)
    return m.end() if m else i


def _object_members(
    text: str, start: int, scan_once: Any, value_at: Any = None
) -> tuple[list[tuple[Member, Any]], int]:
    """The members of the object at `start` with their values, and the index of its `}`.

    `value_at(key, index) -> (value, end)` reads a member's value (default: `scan_once`)."""
    if value_at is None:
        value_at = lambda _key, j: scan_once(text, j)  # noqa: E731
    if text[start] != "{":
        raise _Mismatch
    out: list[tuple[Member, Any]] = []
    i = _ws(text, start + 1)
    if text[i] == "}":
        return out, i
    while True:
        if text[i] != '"':
            raise _Mismatch
        key, key_end = scanstring(text, i + 1)
        j = _ws(text, key_end)
        if text[j] != ":":
            raise _Mismatch
        j = _ws(text, j + 1)
        value, end = value_at(key, j)
        out.append((Member(key, i, key_end, j, end), value))
        k = _ws(text, end)
        if text[k] == "}":
            return out, k
        if text[k] != ",":
            raise _Mismatch
        i = _ws(text, k + 1)


def _scan(text: str, bom: bool, scan_once: Any) -> tuple[SourceText, dict[str, Any]]:
    start = _ws(text, 0)
    arrays: dict[str, ArraySpan] = {}

    def value_at(key: str, j: int) -> tuple[Any, int]:
        if key in ARRAYS and text[j] == "[":
            span, value = _array(text, j, scan_once)
            arrays[key] = span
            return value, span.close + 1
        arrays.pop(key, None)  # a later duplicate key wins, as in json.loads
        value, end = scan_once(text, j)
        return value, end

    found, close = _object_members(text, start, scan_once, value_at)
    members: list[Member] = []
    data: dict[str, Any] = {}
    duplicates: list[str] = []
    for member, value in found:
        if member.key in data:
            duplicates.append(member.key)
            members = [m for m in members if m.key != member.key]
        data[member.key] = value
        members.append(member)
    if text[_ws(text, close + 1) :]:
        raise _Mismatch  # extra data after the object: let json say where
    source = SourceText(text, bom, (start, close), members, arrays)
    source.duplicates = duplicates
    return source, data


def _array(text: str, start: int, scan_once: Any) -> tuple[ArraySpan, list[Any]]:
    items: list[tuple[int, int]] = []
    values: list[Any] = []
    i = _ws(text, start + 1)
    if text[i] == "]":
        return ArraySpan(start, i, items), values
    separator = _SEPARATOR.match
    while True:
        value, end = scan_once(text, i)
        items.append((i, end))
        values.append(value)
        found = separator(text, end)  # `,` and the whitespace around it, in one step
        if found is None:
            k = _ws(text, end)
            if text[k] != "]":
                raise _Mismatch
            return ArraySpan(start, k, items), values
        i = found.end()


# ---------------------------------------------------------------------------- the style


def _detect_style(src: SourceText) -> TextStyle:
    text = src.text
    crlf = text.count("\r\n")
    newline = "\r\n" if crlf and crlf * 2 >= text.count("\n") else "\n"
    ascii_ = text.isascii() and any(
        m.group(1) is not None and int(m.group(1), 16) > 0x7F for m in _ESCAPE.finditer(text)
    )
    body = text[src.open : src.close + 1]
    # `{}` (an empty canvas) gets Obsidian's layout; any other one-line text stays one line
    minified = "\n" not in body and bool(src.members)
    sample = _sample_element(src)
    one_per_line = False
    unit = "\t"
    key_sep, item_sep = ":", ","
    if sample is not None:
        s, e = sample
        element = text[s:e]
        one_per_line = not minified and "\n" not in element
        found = _LINE_INDENT.search(element if not one_per_line else body)
        if found is not None:
            prefix = "" if one_per_line else _line_prefix(text, s)
            inner = found.group(1)
            unit = inner[len(prefix) :] if inner.startswith(prefix) else inner
            unit = unit or "\t"
        key_sep, item_sep = _element_separators(text, s, e)
    else:
        found = _LINE_INDENT.search(body)
        if found is not None:
            unit = found.group(1) or "\t"
        if src.members:
            first = src.members[0]
            key_sep = text[first.key_end : first.value_start] or ":"
        # an empty canvas: Obsidian's style if it looks like Obsidian's, else pretty
        one_per_line = not minified and unit == "\t" and key_sep == ":"
        item_sep = "," if (one_per_line or not minified or " " not in key_sep) else ", "
    if "\n" in key_sep or "\r" in key_sep:
        key_sep = ": " if " " in key_sep else ":"
    if one_per_line or minified:
        item_sep = ", " if item_sep.strip(" ") == "," and item_sep.endswith(" ") else ","
    return TextStyle(newline, ascii_, minified, one_per_line, unit, key_sep, item_sep)


def _sample_element(src: SourceText) -> tuple[int, int] | None:
    """The first element that is an object with two members or more, to copy its style."""
    for key in ARRAYS:
        span = src.arrays.get(key)
        if span is None:
            continue
        for (s, e), value in zip(span.items, src.pristine_items(key), strict=False):
            if isinstance(value, dict) and len(value) >= 2:
                return s, e
    return None


def _element_separators(text: str, s: int, e: int) -> tuple[str, str]:
    decoder = json.JSONDecoder()
    scan_once = json.scanner.make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        members, _ = _object_members(text, s, scan_once)
    except (_Mismatch, StopIteration, ValueError, IndexError):
        return ":", ","
    first, second = members[0][0], members[1][0]
    return text[first.key_end : first.value_start], text[first.value_end : second.key_start]


def _line_prefix(text: str, pos: int) -> str:
    """The whitespace from the start of `pos`'s line to `pos` ("" if there is text before)."""
    start = text.rfind("\n", 0, pos) + 1
    prefix = text[start:pos]
    return prefix if not prefix.strip() else ""


# ---------------------------------------------------------------------------- comparing


def same(a: Any, b: Any) -> bool:
    """Equal as JSON text would be: types, key order and the sign of zero count."""
    kind = type(a)
    if kind is not type(b):
        return False
    if kind is dict:
        # `==` first (C speed, and most elements are unchanged), then what it overlooks:
        # `1 == 1.0 == True`, `0.0 == -0.0`, and the order of the keys
        return a == b and list(a) == list(b) and _same_types(a.values(), b.values())
    if kind is list:
        return a == b and _same_types(a, b)
    if kind is float:
        return bool(a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    return bool(a == b)


def _same_types(xs: Any, ys: Any) -> bool:
    """For values already known `==` pairwise: their types and zeros' signs match too."""
    for x, y in zip(xs, ys, strict=True):
        kind = type(x)
        if kind is not type(y):
            return False
        if kind is float:
            if x == 0.0 and math.copysign(1.0, x) != math.copysign(1.0, y):
                return False
        elif (kind is dict or kind is list) and not same(x, y):
            return False
    return True


# ---------------------------------------------------------------------------- writing


def _dumps(value: Any, style: TextStyle, indent: str | None, prefix: str = "") -> str:
    """One JSON value in the file's spelling; `indent` None: on one line."""
    seps = (style.item_sep, style.key_sep) if indent is None else (",", style.key_sep)
    for ascii_ in (style.ascii, True):
        out = json.dumps(value, ensure_ascii=ascii_, indent=indent, separators=seps)
        try:
            out.encode("utf-8")
        except UnicodeEncodeError:
            continue  # a lone surrogate can only be written as an escape
        break
    if indent is not None:
        out = out.replace("\n", style.newline + prefix)
    elif style.newline != "\n":
        out = out.replace("\n", style.newline)
    return out


def _ordered(value: Any, pristine: list[Any]) -> Any:
    """A new element with its keys in the order the file's own elements use."""
    if not isinstance(value, dict):
        return value
    model = next(
        (
            p
            for p in pristine[:200]
            if isinstance(p, dict) and p.get("type") == value.get("type") and "id" in p
        ),
        None,
    ) or next((p for p in pristine[:200] if isinstance(p, dict) and len(p) > 1), None)
    if model is None:
        return value
    place = {k: float(i) for i, k in enumerate(model)}
    ranks: dict[str, float] = {}
    last = -1.0
    for n, key in enumerate(value):
        last = place.get(key, last + 1e-3 * (n + 1))
        ranks[key] = last
    return {k: value[k] for k in sorted(value, key=lambda k: ranks[k])}


def _element(value: Any, style: TextStyle, prefix: str) -> str:
    if style.minified or style.one_per_line:
        return _dumps(value, style, None)
    return _dumps(value, style, style.unit, prefix)


def render(data: dict[str, Any], src: SourceText) -> str | None:
    """`data` written as edits to the source text; None if it cannot be said that way."""
    text = src.text
    style = src.style
    for key in src.other_keys:
        if key not in data or not same(data[key], src.pristine[key]):
            return None
    new_keys = [k for k in data if k not in src.other_keys and k not in src.arrays]
    if any(k not in ARRAYS or not isinstance(data[k], list) for k in new_keys):
        return None
    edits: list[tuple[int, int, str]] = []
    for key, span in src.arrays.items():
        current = data.get(key)
        pristine = src.pristine_items(key)
        if not isinstance(current, list) or len(current) < len(pristine):
            return None
        for (s, e), old, new in zip(span.items, pristine, current, strict=False):
            if not same(old, new):
                edits.append((s, e, _changed(text, s, e, old, new, style)))
        added = [_ordered(v, pristine) for v in current[len(pristine) :]]
        if added:
            edits.append(_append(text, span, added, src))
    if new_keys:
        edits.append(_add_members(data, new_keys, src))
    edits.sort(key=lambda edit: edit[0])
    out: list[str] = ["\ufeff"] if src.bom else []
    pos = 0
    for s, e, replacement in edits:
        out.append(text[pos:s])
        out.append(replacement)
        pos = e
    out.append(text[pos:])
    return "".join(out)


def _changed(text: str, s: int, e: int, old: Any, new: Any, style: TextStyle) -> str:
    """An element that was changed: only its changed members rewritten, if it can be."""
    prefix = _line_prefix(text, s)
    whole = _element(new, style, prefix)
    if not (isinstance(old, dict) and isinstance(new, dict)) or any(k not in new for k in old):
        return whole
    decoder = json.JSONDecoder()
    scan_once = json.scanner.make_scanner(decoder)  # type: ignore[attr-defined]
    try:
        members, close = _object_members(text, s, scan_once)
    except (_Mismatch, StopIteration, ValueError, IndexError):
        return whole
    if not members or len({m.key for m, _ in members}) != len(members):
        return whole  # `{}` or a duplicate key: which one is meant is not ours to guess
    one_line = "\n" not in text[s:e]
    inner = _line_prefix(text, members[-1][0].key_start)
    pieces: list[str] = []
    pos = s
    for member, _ in members:
        value = new[member.key]
        if not same(old[member.key], value):
            pieces.append(text[pos : member.value_start])
            if one_line or not isinstance(value, dict | list):
                pieces.append(_dumps(value, style, None))
            else:
                pieces.append(_dumps(value, style, style.unit, inner))
            pos = member.value_end
    last = members[-1][0]
    pieces.append(text[pos : last.value_end])
    if len(members) >= 2:
        sep = text[members[-2][0].value_end : last.key_start]
    else:
        sep = "," if one_line else "," + style.newline + inner
    for key in (k for k in new if k not in old):
        value = new[key]
        pieces.append(sep + _dumps(key, style, None) + style.key_sep)
        if one_line or not isinstance(value, dict | list):
            pieces.append(_dumps(value, style, None))
        else:
            pieces.append(_dumps(value, style, style.unit, inner))
    pieces.append(text[last.value_end : close + 1])
    return "".join(pieces)


def _append(text: str, span: ArraySpan, added: list[Any], src: SourceText) -> tuple[int, int, str]:
    """New elements after the array's last one (or into the empty array): an insertion."""
    style = src.style
    if span.items:
        first_start = span.items[0][0]
        last_end = span.items[-1][1]
        if len(span.items) >= 2:
            sep = text[span.items[-2][1] : span.items[-1][0]]
        else:
            # one element: the break and indent before it, as they are
            gap = text[span.open + 1 : first_start]
            cut = gap.rfind("\n")
            if cut < 0:
                sep = "," + gap
            else:
                sep = "," + ("\r\n" if gap[cut - 1 : cut] == "\r" else "\n") + gap[cut + 1 :]
        prefix = _line_prefix(text, span.items[-1][0])
        body = "".join(sep + _element(v, style, prefix) for v in added)
        return last_end, last_end, body
    # an empty array: `[]` or `[ whitespace ]`
    owner = _line_prefix(text, _member_start(src, span))
    inner = owner + style.unit
    interior = text[span.open + 1 : span.close]
    if style.minified:
        sep = style.item_sep
        body = sep.join(_element(v, style, inner) for v in added)
        return span.open + 1, span.open + 1, body
    joiner = "," + style.newline + inner
    body = style.newline + inner + joiner.join(_element(v, style, inner) for v in added)
    if "\n" not in interior:
        # `[]` or `[ ]`: the only original bytes a write may replace, to close the array
        return span.open + 1, span.close, body + style.newline + owner
    return span.open + 1, span.open + 1, body


def _member_start(src: SourceText, span: ArraySpan) -> int:
    for member in src.members:
        if member.value_start == span.open:
            return member.key_start
    return span.open


def _add_members(data: dict[str, Any], keys: list[str], src: SourceText) -> tuple[int, int, str]:
    """`"edges":[...]` (or `nodes`) for an array the file did not have: an insertion."""
    text, style = src.text, src.style
    members = src.members
    if members:
        owner = _line_prefix(text, members[-1].key_start)
        key_sep = text[members[-1].key_end : members[-1].value_start]
        if len(members) >= 2:
            sep = text[members[-2].value_end : members[-1].key_start]
        else:
            sep = "," if style.minified else "," + style.newline + owner
        at = members[-1].value_end
    else:
        owner = "" if style.minified else style.unit
        key_sep = style.key_sep
        sep = ""
        at = src.open + 1
    inner = owner + style.unit
    pieces: list[str] = []
    for key in keys:
        values = data[key]
        head = _dumps(key, style, None) + key_sep + "["
        if not values:
            array = head + "]"
        elif style.minified:
            array = head + style.item_sep.join(_element(v, style, inner) for v in values) + "]"
        else:
            joiner = "," + style.newline + inner
            rows = joiner.join(_element(v, style, inner) for v in values)
            array = head + style.newline + inner + rows + style.newline + owner + "]"
        lead = sep if pieces or members else ("" if style.minified else style.newline + owner)
        pieces.append(lead + array)
        if not members:
            sep = "," if style.minified else "," + style.newline + owner
    body = "".join(pieces)
    if not members and not style.minified:
        interior = text[src.open + 1 : src.close]
        if not interior:
            body += style.newline
    return at, at, body


def render_whole(data: dict[str, Any], src: SourceText, trailing_newline: bool) -> str:
    """The whole document in the file's style, when `render` cannot edit it in place."""
    style = src.style
    bom = "\ufeff" if src.bom else ""
    end = style.newline if trailing_newline else ""
    if style.minified:
        return bom + _dumps(data, style, None) + end
    if not style.one_per_line:
        return bom + _dumps(data, style, style.unit) + end
    unit, nl = style.unit, style.newline
    rows: list[str] = []
    for key, value in data.items():
        head = unit + _dumps(key, style, None) + style.key_sep
        if key in ARRAYS and isinstance(value, list) and value:
            joiner = "," + nl + unit * 2
            items = joiner.join(_dumps(v, style, None) for v in value)
            rows.append(head + "[" + nl + unit * 2 + items + nl + unit + "]")
        else:
            rows.append(head + _dumps(value, style, None))
    if not rows:
        return bom + "{}" + end
    return bom + "{" + nl + ("," + nl).join(rows) + nl + "}" + end
