"""Tasks, their states and results: the plain data the engine moves around.

Kept to slotted classes with no per-task coroutine, future or UUID: a run of 100,000 tasks
is 100,000 small objects and nothing else.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fanout.errors import ConfigError

OnDependencyFailure = Literal["skip", "run"]
OutputKind = Literal["text", "json"]

#: what a callable prompt returns: a prompt string or a list of chat messages
PromptValue = str | list[dict[str, Any]]
PromptFn = Callable[["Mapping[str, Result]"], PromptValue]


class RunRef(Protocol):
    """What a task knows of the run it was submitted in (the engine's `Run`)."""

    @property
    def id(self) -> str: ...


class Priority(enum.IntEnum):
    """Scheduling level; higher starts first. Waiting tasks age upwards (see `Engine`)."""

    LOW = 0
    NORMAL = 1
    HIGH = 2
    URGENT = 3

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            allowed = ", ".join(p.name.lower() for p in cls)
            raise ConfigError(f"unknown priority {value!r}: use one of {allowed}") from None


class TaskState(enum.StrEnum):
    WAITING = "waiting"  # dependencies not finished yet
    READY = "ready"  # queued for a slot (or backing off before a retry)
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset({TaskState.DONE, TaskState.FAILED, TaskState.SKIPPED, TaskState.CANCELLED})


@dataclass(slots=True, frozen=True)
class ErrorInfo:
    """Why a task did not produce a result."""

    error_class: str  # transient | permanent | content | dependency | cancelled | internal
    kind: str  # e.g. rate_limited, timeout, not_selected, dependency_failed
    message: str
    status: int | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"class": self.error_class, "kind": self.kind, "message": self.message}
        if self.status is not None:
            d["status"] = self.status
        return d


class Result:
    """What a task ended with. `ok` is true only for `done`."""

    __slots__ = (
        "attempts",
        "data",
        "error",
        "finish_reason",
        "input_tokens",
        "latency_s",
        "model",
        "output_tokens",
        "state",
        "task",
        "text",
    )

    def __init__(
        self,
        task: Task,
        state: TaskState,
        *,
        text: str | None = None,
        data: Any = None,
        finish_reason: str | None = None,
        model: str | None = None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        attempts: int = 0,
        latency_s: float = 0.0,
        error: ErrorInfo | None = None,
    ) -> None:
        self.task = task
        self.state = state
        self.text = text
        self.data = data  # parsed JSON for json tasks
        self.finish_reason = finish_reason
        self.model = model
        self.input_tokens = input_tokens
        self.output_tokens = output_tokens
        self.attempts = attempts
        self.latency_s = latency_s  # of the successful attempt
        self.error = error

    @property
    def ok(self) -> bool:
        return self.state is TaskState.DONE

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def key(self) -> str:
        return self.task.key

    @property
    def meta(self) -> Mapping[str, Any] | None:
        return self.task.meta

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "task_id": self.task_id,
            "key": self.key,
            "state": str(self.state),
            "text": self.text,
            "attempts": self.attempts,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
        }
        if self.data is not None:
            d["data"] = self.data
        if self.error is not None:
            d["error"] = self.error.as_dict()
        return d

    def __repr__(self) -> str:
        return f"Result({self.task_id!r}, {self.state}, text={(self.text or '')[:30]!r})"


class Task:
    """One agent call to make. Everything but the prompt is optional.

    `prompt` is a string, a list of chat messages, or a callable that receives the results
    of this task's dependencies (by key) and returns either. `depends_on` names other tasks
    by key or by object. `when` receives the same mapping and returns False to skip the
    task as "not selected". `then` receives this task's result once it is durable and
    returns new tasks to add to the run (dynamic fan-out).
    """

    __slots__ = (
        "_key",
        "agent",
        "attempts",
        "body",
        "content_retried",
        "dependents",
        "depends_on",
        "deps_left",
        "enqueued_at",
        "est_tokens",
        "expected_s",
        "free_tries",
        "group",
        "inputs",
        "lane",
        "max_tokens",
        "meta",
        "model",
        "n",
        "on_dependency_failure",
        "output",
        "partition",
        "priority",
        "prompt",
        "provider",
        "ran_for",
        "retry_hint",
        "run",
        "sample",
        "schema",
        "span_base",
        "span_kind",
        "span_seq",
        "span_t0",
        "spans",
        "state",
        "temperature",
        "then",
        "timeout",
        "tries",
        "validate",
        "when",
    )

    def __init__(
        self,
        prompt: str | list[dict[str, Any]] | PromptFn | None = None,
        *,
        key: str | None = None,
        body: Mapping[str, Any] | None = None,
        agent: str | None = None,
        lane: str | None = None,
        partition: str | None = None,
        inputs: Mapping[str, Any] | None = None,
        sample: int = 0,
        priority: Priority | str | int = Priority.NORMAL,
        depends_on: Iterable[str | Task] = (),
        on_dependency_failure: OnDependencyFailure = "skip",
        when: Callable[[Mapping[str, Result]], bool] | None = None,
        then: Callable[[Result], Iterable[Task] | None] | None = None,
        provider: str | None = None,
        model: str | None = None,
        max_tokens: int | None = None,
        temperature: float | None = None,
        timeout: float | None = None,
        attempts: int | None = None,
        expected_s: float | None = None,
        output: OutputKind = "text",
        schema: Mapping[str, Any] | None = None,
        validate: Callable[[str], str | None] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if prompt is None and body is None:
            raise ConfigError("a Task needs a prompt (string, messages or callable) or a body")
        if on_dependency_failure not in ("skip", "run"):
            raise ConfigError(
                f"on_dependency_failure={on_dependency_failure!r}: use 'skip' or 'run'"
            )
        if output not in ("text", "json"):
            raise ConfigError(f"output={output!r}: use 'text' or 'json'")
        if attempts is not None and attempts < 1:
            raise ConfigError(f"attempts={attempts}: a task needs at least 1 attempt")
        self.prompt = prompt
        self._key = key
        self.body = body
        self.agent = agent
        self.lane = lane
        self.partition = partition
        self.inputs = inputs
        self.sample = sample
        self.priority = Priority.parse(priority)
        self.depends_on: tuple[str | Task, ...] = tuple(depends_on)
        self.on_dependency_failure: OnDependencyFailure = on_dependency_failure
        self.when = when
        self.then = then
        self.provider = provider
        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.attempts = attempts
        self.expected_s = expected_s
        self.output: OutputKind = output
        self.schema = schema  # JSON Schema sent to the provider for json output
        self.validate = validate
        self.meta = meta
        # Runtime state: written by the engine alone (read it, never set it). It lives on
        # the task, not in a record beside it, because a run of 100,000 tasks would pay
        # for a second object per task in memory and an indirection on every attempt.
        self.run: RunRef | None = None  # the run it was submitted in
        self.group: object | None = None  # its scheduler group (the engine's)
        self.n = -1  # position in its run, -1 before submission
        self.state = TaskState.WAITING
        self.tries = 0
        self.free_tries = 0  # attempts that never reached the provider (not counted)
        self.enqueued_at = 0.0
        self.est_tokens = -1
        self.deps_left = 0
        self.dependents: list[Task] | None = None
        self.content_retried = False
        self.ran_for = False  # whether an attempt (not a skip or a cancel in queue) ended it
        self.retry_hint: str | None = None
        # where its time goes (engine/spans.py): the span open now, since when (loop time),
        # the closed ones not yet handed to the store, and its group's wait clocks when it
        # joined the ready queue
        self.span_kind = ""
        self.span_t0 = 0.0
        self.spans: tuple[tuple[Any, ...], ...] | None = None
        self.span_base: dict[str, float] | None = None
        self.span_seq = 0  # how many spans it handed to the store in this process

    @property
    def id(self) -> str:
        """`<run>-<n>` once submitted; built on demand so the hot path holds two ints."""
        if self.run is None:
            return "(unsubmitted)"
        return f"{self.run.id}-{self.n}"

    @property
    def key(self) -> str:
        """Stable logical name: given, or derived from partition + agent + inputs + sample."""
        if self._key is None:
            self._key = derive_key(self)
        return self._key

    @property
    def has_explicit_key(self) -> bool:
        return self._key is not None

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, key={self._key!r}, agent={self.agent!r}, state={self.state})"


def derive_key(task: Task) -> str:
    """A short content hash that stays the same across runs for the same logical call."""
    prompt = task.prompt if not callable(task.prompt) else getattr(task.prompt, "__qualname__", "")
    material: Sequence[Any] = (
        task.partition,
        task.agent,
        task.inputs if task.inputs is not None else prompt,
        task.body if task.inputs is None and task.prompt is None else None,
        task.sample,
    )
    raw = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str)
    return "k-" + hashlib.sha256(raw.encode()).hexdigest()[:16]
