"""Reading user-written YAML (fanout.yaml, blueprint front matter) strictly, and turning
pydantic's validation errors into one message a user can act on.

Every message names the file, the key path (`lanes.io_intensive`), the bad value and what
is allowed. A duplicate key is an error (PyYAML would silently keep the last one).
"""

from __future__ import annotations

import json
import types
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from fanout.errors import ConfigError

MAX_PROBLEMS = 10  # a message listing more helps nobody
_SHOW_CHARS = 60
#: deeper than any real configuration; PyYAML composes nodes recursively and would crash
MAX_DEPTH = 64
#: values a document may stand for once its aliases are expanded: nine anchors of nine
#: aliases each (a 431-byte file) stand for 387 million, which validation would walk
MAX_EXPANDED = 100_000

Loc = tuple[str | int, ...]


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping, a document nested deeper
    than `MAX_DEPTH` and aliases that expand to more than `MAX_EXPANDED` values."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} levels deep",
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None and _expanded_size(node) > MAX_EXPANDED:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"its aliases (*name) expand to more than {MAX_EXPANDED:,} values",
                node.start_mark,
            )
        return node


def _expanded_size(root: yaml.Node) -> int:
    """How many values the document stands for with every alias written out, counted once
    per distinct node (an alias is the same node object as its anchor), without recursion."""
    size: dict[int, int] = {}
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in size:
            continue
        kids = _children(node)
        if children_done or not kids:
            size[id(node)] = min(1 + sum(size.get(id(k), 0) for k in kids), MAX_EXPANDED + 1)
            continue
        stack.append((node, True))
        stack.extend((k, False) for k in kids if id(k) not in size)
    return size[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.get(key)
        except TypeError:  # an unhashable key: the base constructor reports it
            continue
        if first is not None:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"the key {key!r} appears twice (first on line {first + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=True)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


#: libyaml's parser (when PyYAML was built with it) with the same duplicate-key check, for
#: text fanout ships: ~10x faster than the pure-Python one, but its composer is C, so the
#: depth and alias-expansion limits of `_StrictLoader` (against hostile files) are not applied
_FastLoader: type | None = None
if getattr(yaml, "__with_libyaml__", False):

    class _CStrictLoader(yaml.CSafeLoader):
        pass

    _CStrictLoader.add_constructor(
        yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping
    )
    _FastLoader = _CStrictLoader


def parse_yaml(text: str, *, source: str, line_offset: int = 0, shipped: bool = False) -> Any:
    """Parse YAML text; a syntax error or a duplicate key is a `ConfigError` naming the
    source and the line (`line_offset` is added, for YAML embedded in a larger file).
    `shipped`: the text is fanout's own (a built-in blueprint): parsed by libyaml."""
    loader = _FastLoader if shipped and _FastLoader is not None else _StrictLoader
    try:
        return yaml.load(text, Loader=loader)  # a SafeLoader or CSafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1 + line_offset}, column {mark.column + 1}: " if mark else ""
        what = exc.problem or exc.context or "unreadable"
        raise ConfigError(f"{source}: {where}not valid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    except ValueError:  # Python reads no integer of more than 4,300 digits
        raise ConfigError(f"{source}: holds a number too long to read (4,300+ digits)") from None
    except RecursionError:  # MAX_DEPTH should stop it first; never a traceback
        raise ConfigError(f"{source}: nested too deep to read") from None


def show(value: Any) -> str:
    """A value as a user wrote it in YAML, shortened."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = _bounded_json(value, _SHOW_CHARS + 1)
    return text if len(text) <= _SHOW_CHARS else text[: _SHOW_CHARS - 1] + "…"


def _bounded_json(value: Any, limit: int) -> str:
    """The start of `value` as JSON, at least `limit` characters of it when it is that long,
    in work bounded by `limit`: a value may share parts (YAML aliases) and stand for far
    more text than it holds."""
    out: list[str] = []
    length = 0
    stack: list[Any] = [value]
    while stack and length < limit:
        v = stack.pop()
        if isinstance(v, _Raw):
            piece = v.text
        elif isinstance(v, Mapping):
            parts: list[Any] = [_Raw("{")]
            for i, (k, x) in enumerate(v.items()):
                if i * 2 > limit:
                    break
                parts += [_Raw(", " if i else ""), str(k), _Raw(": "), x]
            stack.extend(reversed([*parts, _Raw("}")]))
            continue
        elif isinstance(v, list | tuple):
            parts = [_Raw("[")]
            for i, x in enumerate(v):
                if i * 2 > limit:
                    break
                parts += [_Raw(", " if i else ""), x]
            stack.extend(reversed([*parts, _Raw("]")]))
            continue
        else:
            piece = json.dumps(v, ensure_ascii=False, default=str)[:limit]
        out.append(piece)
        length += len(piece)
    return "".join(out)


class _Raw:
    """Text `_bounded_json` writes as it is (punctuation), not as a JSON value."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def key_path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def explain(
    exc: ValidationError,
    *,
    source: str,
    root: type[BaseModel],
    hints: Mapping[str, str] | None = None,
    origins: Mapping[Loc, str] | None = None,
) -> ConfigError:
    """One `ConfigError` for all of `exc`'s errors. `hints` maps a key that is not allowed
    to advice (e.g. a name from the seed notes and ours); `origins` maps a key path to the
    environment variable that set it."""
    problems = []
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(err["loc"])
        if len(loc) >= 2 and loc[-1] == "[key]":  # a mapping key of the wrong type
            path = key_path(loc[:-2])
            what = f"the key {show(loc[-2])} must be text; write it in quotes"
        else:
            path = key_path(loc)
            what = _describe(err, loc, root, hints or {})
        if origins and loc in origins:
            path = f"{path} (set by {origins[loc]})"
        problems.append(f"{path}: {what}" if path else what)
    if len(problems) == 1:
        return ConfigError(f"{source}: {problems[0]}")
    listed = problems[:MAX_PROBLEMS]
    more = len(problems) - len(listed)
    text = f"{source}: {len(problems)} problems:\n" + "\n".join(f"  {p}" for p in listed)
    return ConfigError(text + (f"\n  ... and {more} more" if more else ""))


def _describe(err: ErrorDetails, loc: Loc, root: type[BaseModel], hints: Mapping[str, str]) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        key = loc[-1] if loc else ""
        if isinstance(key, str) and key in hints:
            return f"unknown key; {hints[key]}"
        model = model_at(root, loc[:-1])
        allowed = ", ".join(field_names(model)) if model else ""
        return "unknown key" + (f"; allowed keys: {allowed}" if allowed else "")
    if kind == "missing":
        choices = _literal_choices(root, loc)
        return "required but missing" + (f" (one of: {choices})" if choices else "")
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind == "literal_error":
        return f"{show(value)} is not allowed; use one of {ctx.get('expected')}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{show(value)} is not a whole number"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"{show(value)} is not a number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{show(value)} is not true or false"
    if kind == "string_type":
        return f"{show(value)} is not a string (text)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping of keys to values, got {_what(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {_what(value)}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        bound = {
            "greater_than_equal": f"at least {ctx.get('ge')}",
            "greater_than": f"greater than {ctx.get('gt')}",
            "less_than_equal": f"at most {ctx.get('le')}",
            "less_than": f"less than {ctx.get('lt')}",
        }[kind]
        return f"{show(value)} is not allowed; it must be {bound}"
    if kind == "string_too_short":
        return f"{show(value)} is too short; it must not be empty"
    return f"{show(value)} is not allowed ({err['msg']})"


def _what(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, Mapping):
        return f"a mapping {show(value)}"
    if isinstance(value, list):
        return f"a list {show(value)}"
    if isinstance(value, str):
        return f"the text {show(value)}"
    return f"the value {show(value)}"


def _unwrap(tp: Any) -> Any:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {(f.alias or n): f.annotation for n, f in model.model_fields.items()}


def _type_at(root: type[BaseModel], loc: Loc) -> Any:
    tp: Any = root
    for part in loc:
        tp = _unwrap(tp)
        if _is_model(tp):
            fields = _fields(tp)
            if part not in fields:
                return None
            tp = fields[part]
        elif get_origin(tp) in (dict, Mapping):
            tp = get_args(tp)[1]
        elif get_origin(tp) in (list, tuple, Sequence):
            tp = get_args(tp)[0]
        else:
            return None
    return _unwrap(tp)


def model_at(root: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at `loc`, if there is one."""
    tp = _type_at(root, loc)
    return tp if _is_model(tp) else None


def field_names(model: type[BaseModel]) -> list[str]:
    return list(_fields(model))


def _literal_choices(root: type[BaseModel], loc: Loc) -> str:
    tp = _type_at(root, loc)
    if get_origin(tp) is Literal:
        return ", ".join(str(a) for a in get_args(tp))
    return ""
