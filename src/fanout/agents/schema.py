"""A small JSON Schema subset: enough for agents' JSON answers, no dependency.

Supported keywords: `type` (a name or a list of names), `properties`, `required`,
`additionalProperties` (true/false or a schema), `items` (one schema), `minItems`,
`maxItems`, `enum`, `const`, `minimum`, `maximum`, `minLength`, `maxLength`; annotations
(`title`, `description`, `default`, `examples`, `$schema`, `$id`, `$comment`) are allowed
and ignored. `check_schema` rejects anything else, so a schema never claims more than it
enforces. `schema_problem` returns the first problem of an instance, naming its path
(`$.sub_questions[2].text`), or None.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

KEYWORDS = (
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "minItems",
    "maxItems",
    "enum",
    "const",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
)
ANNOTATIONS = ("title", "description", "default", "examples", "$schema", "$id", "$comment")
TYPES = ("object", "array", "string", "integer", "number", "boolean", "null")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHOW = 40


class SchemaError(ValueError):
    """A schema that uses something this validator does not support."""


def check_schema(schema: Any, path: str = "schema") -> None:
    """Raise `SchemaError` naming the first unsupported or malformed part of `schema`."""
    if not isinstance(schema, Mapping):
        raise SchemaError(f"{path}: a schema is a mapping of keywords, got {_kind(schema)}")
    for kw, value in schema.items():
        at = f"{path}.{kw}"
        if kw in ANNOTATIONS:
            continue
        if kw not in KEYWORDS:
            raise SchemaError(
                f"{at}: the keyword {kw!r} is not supported (supported: {', '.join(KEYWORDS)})"
            )
        if kw == "type":
            names = value if isinstance(value, list) else [value]
            if not names or any(n not in TYPES for n in names):
                raise SchemaError(f"{at}: {value!r} is not a type; use one of {', '.join(TYPES)}")
        elif kw == "properties":
            if not isinstance(value, Mapping):
                raise SchemaError(f"{at}: a mapping of property names to schemas is needed")
            for name, sub in value.items():
                check_schema(sub, f"{at}.{name}")
        elif kw == "required":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise SchemaError(f"{at}: a list of property names is needed")
        elif kw == "additionalProperties":
            if not isinstance(value, bool):
                check_schema(value, at)
        elif kw == "items":
            if isinstance(value, list):
                raise SchemaError(f"{at}: a list of schemas (tuple form) is not supported")
            check_schema(value, at)
        elif kw in _COUNTS:
            if not _is_int(value) or value < 0:
                raise SchemaError(f"{at}: a whole number >= 0 is needed, got {value!r}")
        elif kw in ("minimum", "maximum"):
            if not _is_number(value):
                raise SchemaError(f"{at}: a number is needed, got {value!r}")
        elif kw == "enum" and (not isinstance(value, list) or not value):
            raise SchemaError(f"{at}: a non-empty list of allowed values is needed")


def schema_problem(instance: Any, schema: Mapping[str, Any]) -> str | None:
    """The first way `instance` fails `schema`, as `<path>: <problem>`, or None."""
    return _problem(instance, schema, "$")


def _problem(v: Any, s: Mapping[str, Any], path: str) -> str | None:
    if "const" in s and not _same(v, s["const"]):
        return f"{path}: {_show(v)} is not the required value {_show(s['const'])}"
    if "enum" in s and not any(_same(v, e) for e in s["enum"]):
        allowed = ", ".join(_show(e) for e in s["enum"])
        return f"{path}: {_show(v)} is not one of {allowed}"
    if "type" in s:
        names = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_is_type(v, n) for n in names):
            wanted = " or ".join(_article(n) for n in names)
            return f"{path}: expected {wanted}, got {_article(_kind(v))} {_show(v)}"
    if isinstance(v, dict):
        return _object_problem(v, s, path)
    if isinstance(v, list):
        n = len(v)
        if "minItems" in s and n < s["minItems"]:
            return f"{path}: {n} items, fewer than the minimum of {s['minItems']}"
        if "maxItems" in s and n > s["maxItems"]:
            return f"{path}: {n} items, more than the maximum of {s['maxItems']}"
        if isinstance(items := s.get("items"), Mapping):
            for i, item in enumerate(v):
                if problem := _problem(item, items, f"{path}[{i}]"):
                    return problem
        return None
    if isinstance(v, str):
        n = len(v)
        if "minLength" in s and n < s["minLength"]:
            return f"{path}: {n} characters, fewer than the minimum of {s['minLength']}"
        if "maxLength" in s and n > s["maxLength"]:
            return f"{path}: {n} characters, more than the maximum of {s['maxLength']}"
        return None
    if _is_number(v):
        if "minimum" in s and v < s["minimum"]:
            return f"{path}: {_show(v)} is less than the minimum of {_show(s['minimum'])}"
        if "maximum" in s and v > s["maximum"]:
            return f"{path}: {_show(v)} is greater than the maximum of {_show(s['maximum'])}"
    return None


def _object_problem(v: dict[str, Any], s: Mapping[str, Any], path: str) -> str | None:
    props: Mapping[str, Any] = s.get("properties") or {}
    for name in s.get("required") or ():
        if name not in v:
            return f"{path}: the required property {name!r} is missing"
    for name, sub in props.items():
        if name in v and (problem := _problem(v[name], sub, _child(path, name))):
            return problem
    extra = s.get("additionalProperties", True)
    if extra is True:
        return None
    for name, value in v.items():
        if name in props:
            continue
        if extra is False:
            allowed = ", ".join(props) or "none"
            return f"{path}: the property {name!r} is not allowed (allowed: {allowed})"
        if problem := _problem(value, extra, _child(path, name)):
            return problem
    return None


def _child(path: str, name: str) -> str:
    if _IDENT.match(name):
        return f"{path}.{name}"
    return f"{path}[{json.dumps(name, ensure_ascii=False)}]"


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and math.isfinite(v))


def _is_type(v: Any, name: str) -> bool:
    if name == "object":
        return isinstance(v, dict)
    if name == "array":
        return isinstance(v, list)
    if name == "string":
        return isinstance(v, str)
    if name == "boolean":
        return isinstance(v, bool)
    if name == "null":
        return v is None
    if name == "integer":  # 3.0 is an integer in JSON Schema; true is not
        return _is_int(v) or (_is_number(v) and float(v).is_integer())
    return _is_number(v)  # "number"


def _same(a: Any, b: Any) -> bool:
    """JSON equality: true is not 1, 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    return bool(a == b)


def _kind(v: Any) -> str:
    if isinstance(v, bool):
        return "boolean"
    if v is None:
        return "null"
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    if isinstance(v, str):
        return "string"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number" if math.isfinite(v) else "non-finite number"
    return type(v).__name__


def _article(name: str) -> str:
    if name == "null":
        return "null"
    return ("an " if name[0] in "aeiou" else "a ") + name


def _show(v: Any) -> str:
    text = json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"
