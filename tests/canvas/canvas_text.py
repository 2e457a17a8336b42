"""Canvas text as the tools that write canvases spell it, for the format-preserving tests.

`emit(data, style, spell)` writes a canvas in one of the layouts found in real vaults:
Obsidian's own (tab indent, one compact node or edge per line, `"nodes":[`), tab- or
space-pretty (`json.dumps(indent=...)`), minified; with CRLF, a BOM, `\\uXXXX` escapes and
numbers spelled as the file chose (`1.6e2`, `160.0`, `1.60E+02`). `strict(value)` turns a
parsed value into one whose `==` is JSON-exact: `True` is not `1`, `1` is not `1.0`, `-0.0`
is not `0.0`, key order counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

from hypothesis import strategies as st

Layout = Literal["obsidian", "pretty", "minified"]


@dataclass(frozen=True)
class Style:
    layout: Layout
    unit: str = "\t"
    crlf: bool = False
    bom: bool = False
    ascii: bool = False
    trailing_newline: bool = True

    def __str__(self) -> str:
        extra = [n for n in ("crlf", "bom", "ascii") if getattr(self, n)]
        return f"{self.layout}/{self.unit!r}" + ("+" + "+".join(extra) if extra else "")


STYLES = st.builds(
    Style,
    layout=st.sampled_from(["obsidian", "obsidian", "pretty", "minified"]),
    unit=st.sampled_from(["\t", "  ", "    "]),
    crlf=st.booleans(),
    bom=st.booleans(),
    ascii=st.booleans(),
    trailing_newline=st.booleans(),
)


def strict(value: Any) -> Any:
    """`value` tagged with its JSON type, so `==` compares as the JSON text would."""
    if isinstance(value, bool) or value is None:
        return ("lit", repr(value))
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, float):
        return ("float", value.hex() if not math.isnan(value) else "nan")
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, list):
        return ("list", [strict(v) for v in value])
    if isinstance(value, dict):
        return ("dict", [(k, strict(v)) for k, v in value.items()])
    raise TypeError(type(value))


def spellings(number: float) -> list[str]:
    """Ways a JSON writer may spell `number`, each reading back as the same float."""
    found = [repr(number), f"{number:.17e}", f"{number:.17E}".replace("E+", "E")]
    sign, digits, exponent = Decimal(repr(number)).as_tuple()
    if isinstance(exponent, int) and digits:
        mantissa = "".join(map(str, digits)).rstrip("0") or "0"
        power = exponent + len(digits) - 1
        head = ("-" if sign else "") + mantissa[0] + ("." + mantissa[1:] if mantissa[1:] else "")
        found.append(f"{head}e{power}")  # 1.6e2, as in the canvases
    ok = []
    for text in found:
        back = float(text)
        same = back == number and math.copysign(1, back) == math.copysign(1, number)
        if same and ("." in text or "e" in text.lower()):  # "-0" would read as an int
            ok.append(text)
    return ok or [repr(number)]


def emit(data: dict[str, Any], style: Style, spell: Callable[[list[str]], str]) -> bytes:
    """`data` as canvas text in `style`; `spell` picks a spelling for each float."""

    def scalar(value: Any) -> str:
        if value is True:
            return "true"
        if value is False:
            return "false"
        if value is None:
            return "null"
        if isinstance(value, int):
            return str(value)
        if isinstance(value, float):
            return spell(spellings(value))
        text = json.dumps(value, ensure_ascii=style.ascii)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate can only be written as an escape
            text = json.dumps(value)
        return text

    def compact(value: Any) -> str:
        if isinstance(value, dict):
            return "{" + ",".join(scalar(k) + ":" + compact(v) for k, v in value.items()) + "}"
        if isinstance(value, list):
            return "[" + ",".join(compact(v) for v in value) + "]"
        return scalar(value)

    def pretty(value: Any, level: int) -> str:
        inner = "\n" + style.unit * (level + 1)
        if isinstance(value, dict) and value:
            rows = [scalar(k) + ": " + pretty(v, level + 1) for k, v in value.items()]
            return "{" + inner + ("," + inner).join(rows) + "\n" + style.unit * level + "}"
        if isinstance(value, list) and value:
            rows = [pretty(v, level + 1) for v in value]
            return "[" + inner + ("," + inner).join(rows) + "\n" + style.unit * level + "]"
        return compact(value)

    if style.layout == "minified":
        text = compact(data)
    elif style.layout == "pretty":
        text = pretty(data, 0)
    else:
        rows = []
        for key, value in data.items():
            head = "\t" + scalar(key) + ":"
            if key in ("nodes", "edges") and isinstance(value, list) and value:
                items = ",\n\t\t".join(compact(v) for v in value)
                rows.append(head + "[\n\t\t" + items + "\n\t]")
            else:
                rows.append(head + compact(value))
        text = "{\n" + ",\n".join(rows) + "\n}" if rows else "{}"
    if style.trailing_newline:
        text += "\n"
    if style.crlf:
        text = text.replace("\n", "\r\n")
    return ("\ufeff" if style.bom else "").encode("utf-8") + text.encode("utf-8")


def insertions(before: str, after: str) -> list[str] | None:
    """The pieces `after` adds to `before` at one or two places, or None if it is not so.

    Each piece must hold whole elements (`,{...}` or `"edges":[...]`); where an insertion
    point is ambiguous (the piece starts as the text after it does) every shift is tried.
    """
    limit = min(len(before), len(after))
    p = 0
    while p < limit and before[p] == after[p]:
        p += 1
    s = 0
    while s < limit - p and before[len(before) - 1 - s] == after[len(after) - 1 - s]:
        s += 1
    for head in range(p, max(p - 64, -1), -1):
        for tail in range(s, max(s - 64, -1), -1):
            mid_before = before[head : len(before) - tail]
            mid_after = after[head : len(after) - tail]
            if not mid_before:
                if parsed_piece(mid_after) is not None:
                    return [mid_after]
                continue
            at = mid_after.find(mid_before)
            while at >= 0:
                first, second = mid_after[:at], mid_after[at + len(mid_before) :]
                if parsed_piece(first) is not None and parsed_piece(second) is not None:
                    return [first, second]
                at = mid_after.find(mid_before, at + 1)
    return None


def parsed_piece(piece: str) -> list[Any] | None:
    """The elements an inserted piece holds: `,{...},{...}` or `"edges":[...]`."""
    core = piece.strip(" \t\r\n,")
    if not core:
        return []
    for wrap, pick in (("[{}]", lambda v: v), ("{{{}}}", _arrays_of)):
        try:
            return pick(json.loads(wrap.format(core)))  # type: ignore[no-any-return]
        except (json.JSONDecodeError, AttributeError):
            continue
    return None


def _arrays_of(members: dict[str, Any]) -> list[Any]:
    if not set(members) <= {"nodes", "edges"}:
        raise AttributeError("not only nodes and edges")
    return [v for key in ("nodes", "edges") for v in members.get(key, [])]
