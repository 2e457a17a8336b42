"""What `ParallelAgentExecutor` answers, in the shapes of the seed notes' data model
(Story 8.14's `parallel_agent_execution`): status with `task_queue` counts and one session
per task, results with their aggregation, and the performance figures."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fanout.tasks import Result, TaskState

if TYPE_CHECKING:
    from fanout.engine.run import Run
    from fanout.executor.tasks import Origin

#: the original's overall statuses
RUNNING, COMPLETED, FAILED, CANCELLED = "running", "completed", "failed", "cancelled"
#: a task's state in the original's words (its sessions were running|completed|failed)
SESSION_STATUS = {
    TaskState.WAITING: "pending",
    TaskState.READY: "pending",
    TaskState.RUNNING: "running",
    TaskState.DONE: "completed",
    TaskState.FAILED: "failed",
    TaskState.SKIPPED: "skipped",
    TaskState.CANCELLED: "cancelled",
}


@dataclass(slots=True)
class Execution:
    """One submitted batch as the facade keeps it."""

    run: Run
    origins: list[Origin]
    submitted_at: str  # ISO 8601, UTC
    max_concurrent: int
    fallback_strategy: str
    #: why it was stopped at a failed task (continue_on_error false), if it was
    stopped_by: str | None = None

    @property
    def id(self) -> str:
        return self.run.id


def overall_status(ex: Execution) -> str:
    """running | completed (every task done) | failed | cancelled, as the original said."""
    run = ex.run
    if not run.done:
        return RUNNING
    if run.status == "cancelled" and ex.stopped_by is None:
        return CANCELLED
    return COMPLETED if run.status == "done" else FAILED


def status(ex: Execution) -> dict[str, Any]:
    run = ex.run
    counts = Counter(t.state for t in run.live_tasks())
    pending = counts[TaskState.WAITING] + counts[TaskState.READY]
    return {
        "execution_id": ex.id,
        "submission_timestamp": ex.submitted_at,
        "execution_mode": "parallel_batch",
        "max_concurrent_agents": ex.max_concurrent,
        "overall_status": overall_status(ex),
        "fanout_status": run.status,  # the engine's own word (done, interrupted, ...)
        **({"stopped_by": ex.stopped_by} if ex.stopped_by else {}),
        "task_queue": {
            "total_tasks": run.total,
            "pending_tasks": pending,
            "running_tasks": counts[TaskState.RUNNING],
            "completed_tasks": counts[TaskState.DONE],
            "failed_tasks": counts[TaskState.FAILED],
            "skipped_tasks": counts[TaskState.SKIPPED],
            "cancelled_tasks": counts[TaskState.CANCELLED],
        },
        "agent_execution_sessions": [session(ex, i) for i in range(run.total)],
    }


def session(ex: Execution, i: int) -> dict[str, Any]:
    """One task as the original's `agent_execution_sessions` entry."""
    t = ex.run.tasks[i]
    assert t is not None  # an execution never forgets a task
    o = ex.origins[i]
    r = ex.run.results_by_n[i] if i < len(ex.run.results_by_n) else None
    out: dict[str, Any] = {
        "session_id": t.id,
        "task_id": o.task_id,
        "agent_name": o.agent_name,
        "status": SESSION_STATUS[t.state],
        "input_data": {
            "canvas_path": o.canvas_path,
            "node_id": o.node_id,
            "material_text": o.material_text,
            "guidance": o.guidance,
        },
        "error_handling": {
            "retry_count": max(0, t.tries - 1),
            "max_retries": max(0, (t.attempts or 1) - 1),
            "fallback_strategy": ex.fallback_strategy,
        },
    }
    if r is not None:
        out["execution_duration_ms"] = round(r.latency_s * 1000)
        out["result"] = result_view(r)
    return out


def result_view(r: Result) -> dict[str, Any]:
    total = r.input_tokens + r.output_tokens
    out: dict[str, Any] = {
        "status": "success" if r.ok else SESSION_STATUS[r.state],
        "output_data": r.data if r.data is not None else None,
        "content": r.text,
        "performance_metrics": {
            "generation_time_ms": round(r.latency_s * 1000),
            "token_usage": {
                "input_tokens": r.input_tokens,
                "output_tokens": r.output_tokens,
                "total_tokens": total,
            },
        },
    }
    if r.error is not None:
        out["error"] = r.error.as_dict()
    return out


def results(ex: Execution) -> dict[str, Any]:
    """Every task's outcome in submission order and the original's aggregation: the
    decomposition agents' sub-questions merged (duplicates removed), the scores summed up,
    and the outputs grouped by node."""
    run = ex.run
    rows: list[dict[str, Any]] = []
    done: list[tuple[Origin, Result]] = []
    failed: list[dict[str, Any]] = []
    for i, t in enumerate(run.live_tasks()):  # none forgotten: i == n
        o = ex.origins[i]
        r = run.results_by_n[i] if i < len(run.results_by_n) else None
        row: dict[str, Any] = {
            "task_id": o.task_id,
            "agent_name": o.agent_name,
            "node_id": o.node_id,
            "canvas_path": o.canvas_path,
            "status": SESSION_STATUS[t.state],
        }
        if r is not None:
            row.update(result_view(r))
            row["status"] = SESSION_STATUS[t.state]  # one vocabulary with the sessions'
            row["retry_count"] = max(0, r.attempts - 1)
            if r.ok:
                done.append((o, r))
            elif r.state is TaskState.FAILED and r.error is not None:
                failed.append({"task_id": o.task_id, "agent_name": o.agent_name,
                               "node_id": o.node_id, "error": r.error.as_dict()})  # fmt: skip
        rows.append(row)
    by_node: dict[str, dict[str, Any]] = {}
    for o, r in done:
        by_node.setdefault(o.node_id or o.task_id, {})[o.agent_name] = (
            r.data if r.data is not None else r.text
        )
    return {
        "execution_id": ex.id,
        "overall_status": overall_status(ex),
        "total_tasks": run.total,
        "successful_tasks": len(done),
        "failed_tasks": len(failed),
        "results": rows,
        "result_aggregation": {
            "aggregation_method": "merge_outputs",
            "merged_results": merged(done),
            "by_node": by_node,
            "output_format": "json",
        },
        "error_management": {
            "failed_tasks": failed,
            "error_recovery_attempts": run.retries,
            "isolation_success": True,  # one failure never stops the others here
        },
    }


def merged(done: Sequence[tuple[Origin, Result]]) -> dict[str, Any]:
    """The original's `merged_results` over every JSON answer: sub-questions (from the
    decomposition agents, the same question asked twice counted once), their difficulty,
    how many carry guidance; and the scoring agent's totals and verdicts."""
    seen: set[str] = set()
    subs: list[dict[str, Any]] = []
    totals: list[float] = []
    verdicts: Counter[str] = Counter()
    for _, r in done:
        data = r.data
        if not isinstance(data, dict):
            continue
        for q in data.get("sub_questions") or ():
            if isinstance(q, dict) and isinstance(q.get("text"), str):
                norm = _normal(q["text"])
                if norm not in seen:
                    seen.add(norm)
                    subs.append(q)
        if isinstance(data.get("total"), int | float) and "verdict" in data:
            totals.append(float(data["total"]))
            verdicts[str(data["verdict"])] += 1
    out: dict[str, Any] = {
        "total_sub_questions": len(subs),
        "unique_concepts_covered": len({str(q.get("type")) for q in subs if q.get("type")}),
        "guidance_provided_count": sum(1 for q in subs if str(q.get("guidance") or "").strip()),
        "difficulty_distribution": dict(
            Counter(str(q["difficulty"]) for q in subs if q.get("difficulty"))
        ),
        "sub_questions": subs,
    }
    if totals:
        out["scores"] = {
            "count": len(totals),
            "mean_total": round(sum(totals) / len(totals), 2),
            "verdicts": dict(verdicts),
        }
    return out


_SPACE = re.compile(r"\s+")


def _normal(text: str) -> str:
    """A question as compared for duplicates: case, spacing and the final mark ignored."""
    return _SPACE.sub(" ", text).strip().rstrip("?？。.!！ ").casefold()


def performance(ex: Execution) -> dict[str, Any]:
    """The original's `performance_metrics` from the run's own figures (all of which are
    kept under `fanout`)."""
    m = ex.run.metrics()
    finished = m["done"] + m["failed"]
    wall_ms = round(m["wall_s"] * 1000)
    agents = len({o.agent_name for o in ex.origins})
    return {
        "execution_id": ex.id,
        "parallel_efficiency": {
            "total_execution_time_ms": wall_ms,
            "estimated_serial_time_ms": round(m["serial_s"] * 1000),
            "efficiency_ratio": m["speedup"],
            "concurrency_utilization": m["utilisation"],
        },
        "resource_usage": {"peak_memory_usage_mb": m.get("peak_rss_mb")},
        "throughput": {
            "tasks_per_second": m["throughput_per_s"],
            "agents_per_second": round(agents / max(m["wall_s"], 1e-9), 3) if finished else 0.0,
            "average_task_completion_time_ms": (
                round(m["serial_s"] * 1000 / finished) if finished else None
            ),
        },
        "fanout": m,
    }
