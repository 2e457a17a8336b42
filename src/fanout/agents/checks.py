"""Checks on an agent's answer. Each returns None when the answer can be used, or a message
that the engine records and, on the one content retry, shows the model ("Your previous
answer could not be used: <message>"), so messages say what to do.

Markdown: no NUL, no U+FFFD (text lost in decoding), no sign of a cut (a trailing
ellipsis, "（未完）", "[truncated]", an unclosed code fence), length within
`min_chars`..`max_chars` (Unicode characters of the answer without surrounding
whitespace; a Chinese character counts one), and a Markdown table when one is required.
JSON: parses, and matches the blueprint's schema (see `fanout.agents.schema`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from fanout.agents.schema import schema_problem

#: endings that mean the text was cut off, checked after trailing whitespace and emphasis
TRUNCATION_TAILS = (
    "...",
    "…",
    "⋯",
    "。。。",
    "（未完）",
    "(未完)",
    "（未完待续）",
    "(未完待续)",
    "未完待续",
    "（待续）",
    "(待续)",
    "[truncated]",
    "(truncated)",
    "[...]",
    "to be continued",
)
_TAIL_NOISE = " \t\r\n*_~"
_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)", re.MULTILINE)
_TABLE_RULE = re.compile(
    r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)+\|?[ \t]*$", re.M
)


def check_characters(text: str) -> str | None:
    """NUL and U+FFFD anywhere are faults: the text was damaged on its way."""
    if (i := text.find("\x00")) >= 0:
        return f"the answer contains a NUL character (at character {i}); write plain text"
    if (i := text.find("\ufffd")) >= 0:
        return (
            f"the answer contains U+FFFD, a character lost in decoding (at character {i}); "
            "write the answer again without broken characters"
        )
    return None


def truncation_mark(text: str) -> str | None:
    """The mark that makes `text` look cut off, if any."""
    tail = text.rstrip(_TAIL_NOISE)
    lowered = tail.lower()
    for mark in TRUNCATION_TAILS:
        if lowered.endswith(mark):
            return tail[len(tail) - len(mark) :]
    if len(_FENCE.findall(text)) % 2:
        return "```"
    return None


def check_markdown(
    text: str,
    *,
    min_chars: int | None = None,
    max_chars: int | None = None,
    require_table: bool = False,
) -> str | None:
    """The first fault of a Markdown answer, or None."""
    if problem := check_characters(text):
        return problem
    mark = truncation_mark(text)
    if mark == "```":
        return "the answer has an unclosed ``` code block, so it looks cut off; finish it"
    if mark is not None:
        return (
            f"the answer ends with {mark!r}, so it looks cut off; write it in full and end "
            "with a complete sentence"
        )
    n = len(text.strip())
    if min_chars is not None and n < min_chars:
        return f"the answer has {n} characters; write at least {min_chars}"
    if max_chars is not None and n > max_chars:
        return f"the answer has {n} characters; keep it to at most {max_chars}"
    if require_table and not _TABLE_RULE.search(text):
        return (
            "the answer has no Markdown table; include one (a header row, a row like "
            "| --- | --- |, then one row per line)"
        )
    return None


def check_json(text: str, schema: Mapping[str, Any] | None = None) -> str | None:
    """The first fault of a JSON answer, or None."""
    if problem := check_characters(text):
        return problem
    try:
        data = json.loads(text)
    except ValueError as exc:
        return (
            f"the answer is not valid JSON ({exc}); answer with the JSON object alone, "
            "without code fences or text around it"
        )
    if schema is None:
        return None
    problem = schema_problem(data, schema)
    return None if problem is None else f"the JSON does not match the schema: {problem}"
