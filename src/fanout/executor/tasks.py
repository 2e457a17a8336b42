"""The original system's task dicts -> fanout tasks of the built-in (or configured) agents.

The seed notes hand each agent call over as a dict like
    {"agent_name": "basic-decomposition", "node_id": "node-abc123",
     "node_content": "什么是逆否命题？", "canvas_path": "笔记库/离散数学/离散数学.canvas"}
(Phase 4's `agent_tasks`), or with the material under `input_data` (Story 8.14's data model:
`material_text`, `guidance`). Each becomes one call of the named agent's blueprint: the node's
text is what the learner wrote and (unless `question` is given) the question, as for a
canvas target; the canvas file's name is the topic, the guidance goes with the context.
Every dict is checked before anything runs; a bad one is refused naming its index.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

from fanout.config_legacy import SeedSettings
from fanout.errors import FanoutError, InputError
from fanout.tasks import Priority, Task

if TYPE_CHECKING:
    from fanout.agents import Blueprint

#: the names the original system used for each field, first the one this module writes back
AGENT_KEYS = ("agent_name", "agent", "agent_type", "subagent_type")
CONTENT_KEYS = ("node_content", "material_text", "content")
ALLOWED = frozenset(
    {
        *AGENT_KEYS,
        *CONTENT_KEYS,
        "task_id",
        "node_id",
        "canvas_path",
        "guidance",
        "learner_text",
        "user_understanding",
        "question",
        "topic",
        "context",
        "priority",
        "dependencies",
        "depends_on",
        "estimated_duration",
        "input_data",
    }
)


@dataclass(frozen=True, slots=True)
class Origin:
    """What the caller's dict said about a task, given back in status and results."""

    task_id: str
    agent_name: str
    node_id: str | None
    canvas_path: str | None
    material_text: str
    guidance: str | None


def to_tasks(
    items: Sequence[Mapping[str, Any]],
    blueprints: Mapping[str, Blueprint],
    settings: SeedSettings,
) -> tuple[list[Task], list[Origin]]:
    """Tasks (and their origins) for `items`, in order. Raises `InputError` naming the first
    bad dict (its index, the key, the fix); nothing is half-built."""
    given: object = items  # callers from untyped code pass anything
    if not isinstance(given, list | tuple):
        raise InputError("tasks must be a list of task dicts (one per agent call)")
    if not items:
        raise InputError("no tasks: give at least one task dict")
    tasks: list[Task] = []
    origins: list[Origin] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        try:
            task, origin = _one(item, blueprints, settings)
        except InputError as exc:
            raise InputError(f"tasks[{i}]: {exc.message}") from None
        if origin.task_id in seen:
            raise InputError(
                f"tasks[{i}]: task_id {origin.task_id!r} is also tasks[{seen[origin.task_id]}]'s; "
                "give each task its own task_id (or its own node_id + agent_name)"
            )
        seen[origin.task_id] = i
        tasks.append(task)
        origins.append(origin)
    for i, t in enumerate(tasks):
        missing = [d for d in t.depends_on if isinstance(d, str) and d not in seen]
        if missing:
            raise InputError(
                f"tasks[{i}]: depends on {missing[0]!r}, which is no task_id of this batch"
            )
    return tasks, origins


def _one(
    item: Mapping[str, Any], blueprints: Mapping[str, Blueprint], settings: SeedSettings
) -> tuple[Task, Origin]:
    if not isinstance(item, Mapping):
        raise InputError(f"a task must be a dict, not {type(item).__name__}")
    unknown = sorted(str(k) for k in item if k not in ALLOWED)
    if unknown:
        raise InputError(f"unknown key {unknown[0]!r}; allowed: {', '.join(sorted(ALLOWED))}")
    nested = item.get("input_data") or {}
    if not isinstance(nested, Mapping):
        raise InputError('"input_data" must be a dict')
    bad = sorted(str(k) for k in nested if k not in ALLOWED or k == "input_data")
    if bad:
        raise InputError(f"unknown key input_data.{bad[0]}")
    d: dict[str, Any] = {**nested, **{k: v for k, v in item.items() if k != "input_data"}}

    agent = _first(d, AGENT_KEYS)
    if agent is None:
        raise InputError('no agent: give "agent_name", e.g. "oral-explanation"')
    bp = blueprints.get(agent)
    if bp is None:
        raise InputError(f"unknown agent {agent!r}; known agents: {', '.join(sorted(blueprints))}")
    content = _first(d, CONTENT_KEYS) or _text(d, "question")
    if content is None or not content.strip():
        raise InputError('no material: give "node_content" (the node\'s text) or "material_text"')
    node_id = _text(d, "node_id")
    canvas_path = _text(d, "canvas_path")
    guidance = _text(d, "guidance")
    topic = _text(d, "topic")
    if topic is None and canvas_path:
        topic = PurePath(canvas_path.replace("\\", "/")).stem  # 离散数学.canvas -> 离散数学
    context_parts = [p for p in (_text(d, "context"),) if p]
    if canvas_path:
        context_parts.insert(0, f"Canvas: {canvas_path}")
    if guidance:
        context_parts.append(f"Guidance: {guidance}")
    learner = _text(d, "learner_text") or _text(d, "user_understanding")
    # as a canvas target's: the node's text is what the learner wrote, and the question too
    # unless one is given (canvas/targets.py takes it from the nodes pointing at it)
    inputs = {
        "question": _text(d, "question") or content,
        "learner_text": learner or content,
        "topic": topic or "",
        "context": "\n\n".join(context_parts),
    }
    inputs = {k: v for k, v in inputs.items() if k in bp.inputs}
    task_id = _text(d, "task_id") or (f"{node_id}:{agent}" if node_id else None)
    priority = _priority(d.get("priority"), settings)
    deps = d.get("dependencies", d.get("depends_on", []))
    if isinstance(deps, str):
        deps = [deps]
    if not isinstance(deps, list) or not all(isinstance(x, str) for x in deps):
        raise InputError('"dependencies" must be a list of task_ids')
    origin = Origin(
        task_id=task_id or "",
        agent_name=agent,
        node_id=node_id,
        canvas_path=canvas_path,
        material_text=content,
        guidance=guidance,
    )
    meta = {k: v for k, v in (("node_id", node_id), ("canvas_path", canvas_path)) if v}
    try:
        task = bp.task(
            inputs,
            key=task_id,
            partition=node_id,
            priority=priority,
            depends_on=deps,
            meta={"agent_name": agent, **meta},
        )
    except FanoutError as exc:
        raise InputError(exc.message) from None
    est = d.get("estimated_duration")
    if est is not None:
        if not isinstance(est, int | float) or isinstance(est, bool) or est <= 0:
            raise InputError('"estimated_duration" must be a positive number of seconds')
        task.expected_s = float(est)
    if not task_id:  # no id and no node: the content hash names it
        origin = Origin(task.key, agent, node_id, canvas_path, content, guidance)
    return task, origin


def _first(d: Mapping[str, Any], keys: Sequence[str]) -> str | None:
    for k in keys:
        if k in d and d[k] is not None:
            return _text(d, k)
    return None


def _text(d: Mapping[str, Any], key: str) -> str | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, str | int | float):
        raise InputError(f'"{key}" must be text')
    return str(v)


def _priority(value: Any, settings: SeedSettings) -> Priority:
    """A task's priority: a level name of the config's `priority_levels` or 0-3 (low to
    urgent); every task is `normal` when the config's queue is plain FIFO."""
    if value is None or not settings.use_priorities:
        return Priority.NORMAL
    if isinstance(value, str) and value.strip().lower() not in settings.priority_levels:
        raise InputError(
            f"priority {value!r} is not one of the configured levels: "
            f"{', '.join(settings.priority_levels)}"
        )
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise InputError(f"priority {value!r}: give a level name or 0-3")
    try:
        return Priority.parse(value)
    except (ValueError, FanoutError):
        raise InputError(
            f"priority {value!r}: give a level name or 0 (low) to 3 (urgent)"
        ) from None
