"""The run store: every run, task, attempt, result and sink acknowledgement goes through it.

The interface is async and batched: `write(ops)` returns when every op in the batch is
durable. The engine never awaits a single transition on the hot path; its `Journal` groups
them and learns when each batch is durable. `MemoryStore` keeps everything in this process
(the default for library use and the seam's first implementation); the SQLite store of a
later issue implements the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from fanout.tasks import ErrorInfo, Result, Task


@dataclass(slots=True, frozen=True)
class RunOpened:
    run_id: str
    kind: str
    created_at: float  # unix time
    config: Mapping[str, Any]


@dataclass(slots=True, frozen=True)
class TasksAdded:
    run_id: str
    tasks: Sequence[Task]


@dataclass(slots=True, frozen=True)
class AttemptStarted:
    run_id: str
    n: int
    attempt: int
    t: float


@dataclass(slots=True, frozen=True)
class AttemptFailed:
    """An attempt that ended in an error and will be retried."""

    run_id: str
    n: int
    attempt: int
    duration: float
    error: ErrorInfo


@dataclass(slots=True, frozen=True)
class ResultRecorded:
    """The task's terminal state and result (its last attempt's outcome included)."""

    run_id: str
    n: int
    result: Result
    duration: float


@dataclass(slots=True, frozen=True)
class SinkAcked:
    """Sink `sink` has written everything of run `run_id` up to `position` (sink-defined)."""

    run_id: str
    sink: str
    position: int


@dataclass(slots=True, frozen=True)
class RunClosed:
    run_id: str
    status: str
    ended_at: float  # unix time


Op = (
    RunOpened | TasksAdded | AttemptStarted | AttemptFailed | ResultRecorded | SinkAcked | RunClosed
)


class Store(Protocol):
    async def write(self, ops: Sequence[Op]) -> None:
        """Apply a batch of ops; every one is durable when this returns."""
        ...

    async def results(self, run_id: str) -> list[Result]:
        """The run's recorded results, by task number."""
        ...

    async def sink_position(self, run_id: str, sink: str) -> int:
        """Where sink `sink` acknowledged it had got to (-1 when never)."""
        ...

    async def run_info(self, run_id: str) -> dict[str, Any] | None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class _RunData:
    opened: RunOpened
    tasks: list[Task] = field(default_factory=list)
    results: list[Result | None] = field(default_factory=list)  # by task number
    attempts_started: int = 0
    attempts_failed: list[AttemptFailed] = field(default_factory=list)
    acks: dict[str, int] = field(default_factory=dict)
    status: str = "running"
    ended_at: float | None = None


class MemoryStore:
    """A store that lives as long as the process: what the engine uses when none is given."""

    def __init__(self) -> None:
        self._runs: dict[str, _RunData] = {}
        self.batches = 0  # how many write() calls: lets tests see grouping

    async def write(self, ops: Sequence[Op]) -> None:
        self.batches += 1
        runs = self._runs
        for op in ops:
            if isinstance(op, ResultRecorded):
                runs[op.run_id].results[op.n] = op.result
            elif isinstance(op, AttemptStarted):
                runs[op.run_id].attempts_started += 1
            elif isinstance(op, AttemptFailed):
                runs[op.run_id].attempts_failed.append(op)
            elif isinstance(op, TasksAdded):
                data = runs[op.run_id]
                data.tasks.extend(op.tasks)
                data.results.extend([None] * len(op.tasks))
            elif isinstance(op, RunOpened):
                runs[op.run_id] = _RunData(op)
            elif isinstance(op, SinkAcked):
                runs[op.run_id].acks[op.sink] = op.position
            elif isinstance(op, RunClosed):
                data = runs[op.run_id]
                data.status, data.ended_at = op.status, op.ended_at

    async def results(self, run_id: str) -> list[Result]:
        return [r for r in self._runs[run_id].results if r is not None]

    async def sink_position(self, run_id: str, sink: str) -> int:
        return self._runs[run_id].acks.get(sink, -1)

    async def run_info(self, run_id: str) -> dict[str, Any] | None:
        data = self._runs.get(run_id)
        if data is None:
            return None
        return {
            "run_id": run_id,
            "kind": data.opened.kind,
            "created_at": data.opened.created_at,
            "config": dict(data.opened.config),
            "tasks": len(data.tasks),
            "results": sum(r is not None for r in data.results),
            "attempts_started": data.attempts_started,
            "attempts_failed": len(data.attempts_failed),
            "status": data.status,
            "ended_at": data.ended_at,
        }

    async def close(self) -> None:
        return None
