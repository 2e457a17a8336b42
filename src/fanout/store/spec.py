"""A task as JSON: what the store keeps so that `fanout resume` can rebuild it.

Tasks from JSONL or the CLI are plain data and round-trip. A blueprint's task is kept as the
blueprint's name and version, its inputs and the fields that differ from the blueprint, and
is rebuilt through the blueprint (so a changed blueprint shows up as a changed request).
A prompt callable is kept only when it can describe itself (`to_spec()`, e.g. the batch's
`{{ID}}` placeholders); a task with another callable prompt, or a `when`/`then`/`validate`
callable, has no spec: Python users resume it by submitting the same tasks again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError
from fanout.prompts import Placeholders
from fanout.tasks import Priority, Task

if TYPE_CHECKING:
    from fanout.agents import Blueprint

#: settings a blueprint gives its tasks; a task that differs keeps its own value
_BP_FIELDS = ("lane", "provider", "model", "max_tokens", "temperature", "timeout", "attempts")
_BP_META = ("blueprint", "blueprint_version")
_PLAIN = (
    "agent",
    "lane",
    "partition",
    "provider",
    "model",
    "max_tokens",
    "temperature",
    "timeout",
    "attempts",
    "expected_s",
)
_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), default=None
).encode


def task_spec(t: Task) -> str | None:
    """`t` as JSON, or None when it cannot be rebuilt from data. Call before the engine
    fills in defaults (provider, model, lane), so that resuming applies the defaults then."""
    if t.when is not None or t.then is not None:
        return None
    bp = _blueprint_of(t)
    if t.validate is not None and bp is None:
        return None
    d: dict[str, Any] = {}
    if t.has_explicit_key:
        d["key"] = t.key
    if bp is not None and t.inputs is not None and not callable(t.prompt):
        d["blueprint"] = bp.name
        d["inputs"] = dict(t.inputs)
        over = {f: getattr(t, f) for f in _BP_FIELDS if getattr(t, f) != getattr(bp, f)}
        if over:
            d["over"] = over
        if t.partition is not None:
            d["partition"] = t.partition
    else:
        p = t.prompt
        if callable(p):
            to_spec = getattr(p, "to_spec", None)
            if to_spec is None:
                return None
            d["prompt_fn"] = to_spec()
        elif p is not None:
            d["prompt"] = p
        if t.body is not None:
            d["body"] = dict(t.body)
        for f in _PLAIN:
            v = getattr(t, f)
            if v is not None:
                d[f] = v
        if t.inputs is not None:
            d["inputs"] = dict(t.inputs)
        if t.output != "text":
            d["output"] = t.output
        if t.schema is not None:
            d["schema"] = dict(t.schema)
    if t.sample:
        d["sample"] = t.sample
    if t.priority != Priority.NORMAL:
        d["priority"] = int(t.priority)
    if t.depends_on:
        d["deps"] = [x.key if isinstance(x, Task) else x for x in t.depends_on]
    if t.on_dependency_failure != "skip":
        d["on_dep_fail"] = t.on_dependency_failure
    if t.meta:
        d["meta"] = dict(t.meta)
    try:
        return _dumps(d)
    except (TypeError, ValueError):  # a meta value that is not JSON
        return None


def spec_meta(spec: str | None) -> dict[str, Any]:
    """The `meta` of a stored task (what an export needs), without rebuilding it."""
    if not spec:
        return {}
    meta = json.loads(spec).get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def spec_key(spec: str) -> str:
    """The key of the task `spec` describes, when it was derived (not given)."""
    from fanout.tasks import derive_key

    d = json.loads(spec)
    if d.get("key") is not None:
        return str(d["key"])
    if d.get("blueprint") is not None:
        t = Task("", agent=d["blueprint"], inputs=d.get("inputs") or {})
        t.partition, t.sample = d.get("partition"), d.get("sample", 0)
        return derive_key(t)
    return task_from_spec(spec, "").key


def task_from_spec(spec: str, key: str, blueprints: Mapping[str, Blueprint] | None = None) -> Task:
    """Rebuild a task from `task_spec`'s JSON. Raises `ConfigError` when it names a
    blueprint that is not available here."""
    d = json.loads(spec)
    common: dict[str, Any] = {
        "key": d.get("key"),
        "sample": d.get("sample", 0),
        "priority": d.get("priority", int(Priority.NORMAL)),
        "depends_on": tuple(d.get("deps", ())),
        "on_dependency_failure": d.get("on_dep_fail", "skip"),
    }
    meta = d.get("meta")
    name = d.get("blueprint")
    if name is not None:
        bp = (blueprints or {}).get(name)
        if bp is None:
            raise ConfigError(
                f"task {key!r} was made by agent {name!r}, which is not known here; "
                "add its blueprint back (or run from the project that has it)"
            )
        extra = {k: v for k, v in (meta or {}).items() if k not in _BP_META}
        t = bp.task(d.get("inputs"), partition=d.get("partition"), meta=extra, **common)
        for f, v in (d.get("over") or {}).items():
            if f in _BP_FIELDS:
                setattr(t, f, v)
        return t
    prompt: Any = d.get("prompt")
    fn = d.get("prompt_fn")
    if fn is not None:
        prompt = _prompt_fn(fn)
    kw = {f: d[f] for f in _PLAIN if f in d}
    return Task(
        prompt,
        body=d.get("body"),
        inputs=d.get("inputs"),
        output=d.get("output", "text"),
        schema=d.get("schema"),
        meta=meta,
        **common,
        **kw,
    )


def _prompt_fn(spec: Mapping[str, Any]) -> Any:
    kind = spec.get("kind")
    if kind == "placeholders":
        return Placeholders(spec["content"])
    raise ConfigError(f"a stored task has a prompt of unknown kind {kind!r}")


def _blueprint_of(t: Task) -> Blueprint | None:
    """The blueprint a task came from: its `validate` is that blueprint's `check`."""
    owner = getattr(t.validate, "__self__", None)
    if owner is None:
        return None
    from fanout.agents import Blueprint

    return owner if isinstance(owner, Blueprint) else None
