"""JSONL batches in: input lines -> tasks (the lines that cannot be tasks are kept, with why).

Input lines are either the OpenAI Batch API form
    {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
or a simple form
    {"id": "q1", "prompt": "..."}   /   {"id": "q1", "messages": [...]}
with optional "priority", "lane", "agent", "depends_on", "model", "max_tokens", or a line that
names an agent blueprint and its inputs instead of a prompt
    {"id": "q1", "agent": "oral-explanation", "inputs": {"question": "...", "topic": "..."}}
A dependent's prompt may quote a dependency's answer as {{ID}}.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from fanout.errors import ConfigError, FanoutError, InputError
from fanout.prompts import Placeholders
from fanout.tasks import Priority, PromptFn, PromptValue, Task

if TYPE_CHECKING:
    from fanout.agents import Blueprint

SUPPORTED_URLS = ("/v1/chat/completions",)
_SIMPLE_KEYS = frozenset(
    {
        "id",
        "prompt",
        "messages",
        "inputs",
        "priority",
        "lane",
        "agent",
        "depends_on",
        "model",
        "max_tokens",
    }
)
_BATCH_KEYS = frozenset({"custom_id", "method", "url", "body", "priority", "lane", "depends_on"})
#: the largest context windows hold about 2M tokens, some 8 MB of text: a longer line cannot
#: be one request, and sending it would cost money for nothing (`--max-line` changes it)
DEFAULT_MAX_LINE_BYTES = 10_000_000
#: deeper than any real request (a JSON schema in a request nests some tens of levels); the
#: store, the cache and the providers all walk a request recursively
MAX_DEPTH = 100


@dataclass(slots=True, frozen=True)
class LineError:
    """An input line that cannot become a task."""

    line: int  # 1-based line number in the input file
    custom_id: str | None
    reason: str

    def __str__(self) -> str:
        who = f" ({self.custom_id})" if self.custom_id else ""
        return f"line {self.line}{who}: {self.reason}"


@dataclass(slots=True)
class Batch:
    """A parsed input file: tasks in input order and the lines that were refused."""

    tasks: list[Task]
    errors: list[LineError]
    lines: int  # non-blank input lines: the number of output lines

    def slots(self) -> list[Task | LineError]:
        """Every non-blank input line, in order, as its task or its error."""
        out: list[Task | LineError] = [*self.tasks, *self.errors]
        out.sort(key=_line_of)
        return out


def _line_of(item: Task | LineError) -> int:
    if isinstance(item, LineError):
        return item.line
    assert item.meta is not None
    return int(item.meta["line"])


def open_input(path: str | os.PathLike[str]) -> BinaryIO:
    """The input file opened for reading; `InputError` when it is not a readable file."""
    p = Path(path)
    try:
        # a FIFO or a device would block the read (or never end): only a regular file
        mode = p.stat().st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):
            raise InputError(f"{p}: not a regular file (a pipe or a device); give a JSONL file")
        return p.open("rb")
    except FileNotFoundError:
        raise InputError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{p}: is a directory, not a JSONL file") from None
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror})") from None


def read_batch(
    path: str | os.PathLike[str],
    blueprints: Mapping[str, Blueprint] | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Batch:
    """Parse a JSONL batch file. A missing or unreadable file raises `InputError`; bad lines
    are collected (with line number and reason), not raised."""
    p = Path(path)
    with open_input(p) as f:
        try:
            raw = f.read()
        except OSError as exc:
            raise InputError(f"{p}: cannot read it ({exc.strerror})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    return parse_lines(jsonl_lines(text), blueprints, max_line_bytes=max_line_bytes)


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: they end at "\n" (or "\r\n") only. `str.splitlines` also
    splits at U+2028, U+2029, U+0085, \x0b, \x0c and \x1c-\x1e, which JSON strings may hold
    as they are: a line holding one would become two bad lines and its request be lost."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the file's final newline ends the last line; it starts none
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def parse_lines(
    lines: Iterable[str],
    blueprints: Mapping[str, Blueprint] | None = None,
    *,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Batch:
    tasks: list[Task] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    count = 0
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        count += 1
        item = parse_line(i, line, blueprints, max_line_bytes)
        if isinstance(item, Task):
            cid = item.key
            if cid in seen:
                item = LineError(i, cid, f"duplicate id {cid!r} (first on line {seen[cid]})")
            else:
                seen[cid] = i
                tasks.append(item)
                continue
        errors.append(item)
    _check_dependencies(tasks, errors, seen)
    return Batch(tasks, errors, count)


def parse_line(
    i: int,
    line: str,
    blueprints: Mapping[str, Blueprint] | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> Task | LineError:
    """Input line `i` (1-based, not blank) as its task, or why it cannot be one. Checks the
    line alone: duplicate ids and dependencies are the whole file's business."""
    # a character is at most 4 bytes: only a long line is measured exactly
    if len(line) * 4 > max_line_bytes and len(line.encode("utf-8", "replace")) > max_line_bytes:
        return LineError(
            i,
            None,
            f"{_size(len(line.encode('utf-8', 'replace')))}, over the "
            f"{_size(max_line_bytes)} a line may have; raise --max-line to send it",
        )
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return LineError(i, None, f"not valid JSON ({exc.msg} at column {exc.colno})")
    except RecursionError:
        return LineError(i, None, f"nested more than {MAX_DEPTH} levels deep")
    except ValueError:  # Python refuses to read an integer of more than 4,300 digits
        return LineError(i, None, "holds a number too long to read (4,300+ digits)")
    problem = _unsendable(obj)
    if problem is not None:
        cid = obj.get("custom_id", obj.get("id")) if isinstance(obj, dict) else None
        ok_id = isinstance(cid, str) and _unsendable(cid) is None
        return LineError(i, cid if ok_id else None, problem)
    if not isinstance(obj, dict):
        return LineError(i, None, f"a line must be a JSON object, not {_kind(obj)}")
    cid = obj.get("custom_id", obj.get("id"))
    cid_s = str(cid) if isinstance(cid, str | int) and not isinstance(cid, bool) else None
    try:
        return _task_from(obj, i, cid_s, blueprints)
    except InputError as exc:
        return LineError(i, cid_s, exc.message)


def _unsendable(obj: Any) -> str | None:
    """Why a parsed line cannot be stored or sent, or None: nested deeper than `MAX_DEPTH`,
    or a string holding a lone surrogate (`\\ud800` without its pair is not Unicode text:
    it cannot be written as UTF-8). Walks the value without recursion."""
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            if not v.isascii():
                try:
                    v.encode("utf-8")
                except UnicodeEncodeError:
                    return "holds a lone surrogate escape (such as \\ud800), which is not text"
        elif isinstance(v, dict | list):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep"
            items = [*v.keys(), *v.values()] if isinstance(v, dict) else v
            stack.extend((x, depth + 1) for x in items)
    return None


_SIZE_UNITS = {"k": 1_000, "kb": 1_000, "m": 1_000_000, "mb": 1_000_000, "b": 1, "": 1}


def parse_size(flag: str, value: str) -> int:
    """Bytes from "10MB", "500kB", "2000000"; `ConfigError` naming `flag`."""
    v = value.strip().lower().replace("_", "").replace(",", "")
    digits = v.rstrip("kmb")
    unit = _SIZE_UNITS.get(v[len(digits) :])
    try:
        n = float(digits) * unit if unit is not None else -1.0
    except ValueError:
        n = -1.0
    if not n >= 1:
        raise ConfigError(f"{flag} {value!r}: give a size in bytes, e.g. 10MB, 500kB or 2000000")
    return int(n)


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n:,} bytes"


def _kind(v: object) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number"}.get(
        type(v), "null" if v is None else type(v).__name__
    )


def _task_from(
    obj: dict[str, Any], line: int, cid: str | None, blueprints: Mapping[str, Blueprint] | None
) -> Task:
    if "custom_id" in obj or "body" in obj:
        return _from_batch_form(obj, line, cid)
    if "inputs" in obj:
        return _from_agent_form(obj, line, cid, blueprints or {})
    return _from_simple_form(obj, line, cid)


def _from_agent_form(
    obj: dict[str, Any], line: int, cid: str | None, blueprints: Mapping[str, Blueprint]
) -> Task:
    if cid is None:
        raise InputError('missing "id": every line needs a string id')
    extra = sorted(set(obj) & {"prompt", "messages", "max_tokens"})
    if extra:
        raise InputError(f'a line with "inputs" takes its prompt from the agent; drop {extra[0]}')
    agent = obj.get("agent")
    if not isinstance(agent, str) or not agent:
        raise InputError('a line with "inputs" needs "agent": the name of a blueprint')
    bp = blueprints.get(agent)
    if bp is None:
        known = ", ".join(sorted(blueprints)) or "none loaded"
        raise InputError(f"unknown agent {agent!r}; known agents: {known}")
    inputs = obj["inputs"]
    if not isinstance(inputs, dict) or not all(isinstance(k, str) for k in inputs):
        raise InputError('"inputs" must be an object of named values')
    kw = _common(obj)
    kw.pop("agent", None)
    lane = kw.pop("lane", None)
    try:
        task = bp.task(
            {k: str(v) for k, v in inputs.items()},
            key=cid,
            priority=kw.get("priority", Priority.NORMAL),
            depends_on=kw["depends_on"],
            meta={"line": line, "custom_id": cid},
        )
    except FanoutError as exc:
        raise InputError(exc.message) from None
    if lane is not None:
        task.lane = lane
    if "model" in obj:
        task.model = str(obj["model"])
    return task


def _common(obj: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if "priority" in obj:
        try:
            kw["priority"] = Priority.parse(obj["priority"])
        except (ValueError, AttributeError):
            raise InputError(
                f"priority {obj['priority']!r} is not one of urgent, high, normal, low"
            ) from None
    for name in ("lane", "agent"):
        if name in obj:
            if not isinstance(obj[name], str) or not obj[name]:
                raise InputError(f'"{name}" must be a non-empty string')
            kw[name] = obj[name]
    deps = obj.get("depends_on", [])
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise InputError('"depends_on" must be a list of ids')
    kw["depends_on"] = deps
    return kw


def _from_simple_form(obj: dict[str, Any], line: int, cid: str | None) -> Task:
    if cid is None:
        raise InputError('missing "id" (or "custom_id"): every line needs a string id')
    unknown = sorted(set(obj) - _SIMPLE_KEYS)
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_SIMPLE_KEYS))}"
        )
    kw = _common(obj)
    if "model" in obj:
        if not isinstance(obj["model"], str) or not obj["model"]:
            raise InputError('"model" must be a non-empty string')
        kw["model"] = obj["model"]
    if "max_tokens" in obj:
        mt = obj["max_tokens"]
        if not isinstance(mt, int) or isinstance(mt, bool) or mt < 1:
            raise InputError('"max_tokens" must be a positive integer')
        kw["max_tokens"] = mt
    prompt, messages = obj.get("prompt"), obj.get("messages")
    if (prompt is None) == (messages is None):
        raise InputError('give exactly one of "prompt" (a string) or "messages" (a list)')
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError('"prompt" must be a non-empty string')
        content: str | list[dict[str, Any]] = prompt
    else:
        content = _check_messages(messages)
    meta = {"line": line, "custom_id": cid}
    p: PromptValue | PromptFn = Placeholders(content) if kw["depends_on"] else content
    return Task(p, key=cid, meta=meta, **kw)


def _from_batch_form(obj: dict[str, Any], line: int, cid: str | None) -> Task:
    if cid is None or "custom_id" not in obj:
        raise InputError('missing "custom_id": every batch line needs a string custom_id')
    unknown = sorted(set(obj) - _BATCH_KEYS)
    if unknown:
        raise InputError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_BATCH_KEYS))}"
        )
    method = obj.get("method", "POST")
    if method != "POST":
        raise InputError(f'"method" must be "POST", not {method!r}')
    url = obj.get("url", SUPPORTED_URLS[0])
    if url not in SUPPORTED_URLS:
        raise InputError(f'"url" {url!r} is not supported; use {", ".join(SUPPORTED_URLS)}')
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InputError('"body" must be a JSON object with "messages"')
    messages = _check_messages(body.get("messages"))
    for k in ("max_tokens", "max_completion_tokens"):
        v = body.get(k)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise InputError(f'"body.{k}" must be a positive integer')
    kw = _common(obj)
    meta = {"line": line, "custom_id": cid}
    if kw["depends_on"]:
        rest = {k: v for k, v in body.items() if k != "messages"}
        return Task(
            Placeholders(messages),
            key=cid,
            meta=meta,
            model=rest.get("model"),
            max_tokens=rest.get("max_tokens") or rest.get("max_completion_tokens"),
            temperature=rest.get("temperature"),
            **kw,
        )
    return Task(body=body, key=cid, meta=meta, **kw)


def _check_messages(messages: Any) -> list[dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise InputError('"messages" must be a non-empty list of {"role", "content"} objects')
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise InputError(f'messages[{j}] must be an object with "role" and "content"')
    return messages


def _check_dependencies(tasks: list[Task], errors: list[LineError], seen: dict[str, int]) -> None:
    """Refuse tasks whose dependencies are not tasks of this batch (cascading)."""
    while True:
        ok_ids = {t.key for t in tasks}
        bad = [
            t for t in tasks if any(isinstance(d, str) and d not in ok_ids for d in t.depends_on)
        ]
        if not bad:
            return
        for t in bad:
            missing = [d for d in t.depends_on if isinstance(d, str) and d not in ok_ids]
            assert t.meta is not None
            where = (
                "was refused" if all(d in seen for d in missing) else "is not an id in this file"
            )
            errors.append(
                LineError(int(t.meta["line"]), t.key, f"depends_on {missing[0]!r}, which {where}")
            )
            tasks.remove(t)
