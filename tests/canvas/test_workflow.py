"""The canvas workflow: planning, --smart as one DAG, aggregation, write-back as a sink."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import fanout
from fanout.agents import builtin_blueprints
from fanout.canvas import load_canvas
from fanout.canvas.workflow import CanvasSink, median_verdict, plan_canvas, task_key
from fanout.errors import ConfigError
from fanout.tasks import Result, Task, TaskState

ROOT = Path(__file__).resolve().parents[2]
LANES = {"computation_intensive": 2, "io_intensive": 4, "lightweight": 6}


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    dst = tmp_path / "我的笔记库"
    shutil.copytree(ROOT / "examples" / "vault", dst)
    return dst


def canvas_in(vault: Path) -> Path:
    return vault / "数据结构.canvas"


async def run_job(job: Any, mode: str = "individual", provider: Any = None) -> tuple[Any, Any]:
    sim = provider or fanout.SimProvider(fanout.SimConfig(base_latency_s=0.0))
    async with fanout.Engine(providers=sim, concurrency=8, lanes=LANES) as engine:
        run = engine.submit(job.tasks, kind="canvas")
        sink = CanvasSink(job, mode)  # type: ignore[arg-type]
        sink.attach(run)
        await run.wait()
        return run, await sink.finish()


def test_plain_run_writes_one_note_node_and_edge_per_target_and_agent(vault: Path) -> None:
    path = canvas_in(vault)
    before = load_canvas(path)
    agents = ["oral-explanation", "memory-anchor", "comparison-table"]
    job = plan_canvas(path, builtin_blueprints(), agents=agents)
    assert not job.smart
    assert len(job.tasks) == len(job.targets) * 3
    assert {t.key for t in job.tasks} == {
        task_key(tg.node_id, a) for tg in job.targets for a in agents
    }
    run, report = asyncio.run(run_job(job))
    assert run.metrics()["done"] == len(job.tasks)
    after = load_canvas(path)
    assert len(after.nodes) == len(before.nodes) + len(job.tasks)
    assert len(after.edges) == len(before.edges) + len(job.tasks)
    assert after.data["nodes"][: len(before.nodes)] == before.data["nodes"]  # appended only
    labels = {e.label for e in after.edges[len(before.edges) :]}
    assert labels == {"口语化解释", "记忆锚点", "对比表"}  # a Chinese canvas: the zh titles
    for note in report.notes:
        text = (vault / note.vault_path).read_text(encoding="utf-8")
        r = run.result(task_key(note_target(after, note.node_id), note_agent(after, note.node_id)))
        assert r is not None
        assert r.text is not None
        assert r.text.strip() in text  # the whole answer, never cut


def note_target(canvas: Any, node_id: str) -> str:
    edge = next(e for e in canvas.edges if e.to_node == node_id)
    return str(edge.from_node)


def note_agent(canvas: Any, node_id: str) -> str:
    """The agent whose note the node holds, from its edge's label (the agent's zh title)."""
    edge = next(e for e in canvas.edges if e.to_node == node_id)
    by_title = {bp.title["zh"]: bp.name for bp in builtin_blueprints().values()}
    return by_title[str(edge.label)]


def test_rerun_adds_nothing(vault: Path) -> None:
    path = canvas_in(vault)
    job = plan_canvas(path, builtin_blueprints(), agents=["memory-anchor"])
    asyncio.run(run_job(job))
    once = path.read_bytes()
    job2 = plan_canvas(path, builtin_blueprints(), agents=["memory-anchor"])
    assert [t.key for t in job2.tasks] == [t.key for t in job.tasks]
    _, report = asyncio.run(run_job(job2))
    assert path.read_bytes() == once
    assert {n.note for n in report.notes} == {"unchanged"}


#: the documented smart selection, written out here (not read from the code under test)
SMART_SELECTS = {
    "not_understood": {"clarification-path", "oral-explanation", "basic-decomposition"},
    "partial": {"memory-anchor", "comparison-table", "verification-question-agent"},
    "mastered": {"verification-question-agent"},
}
#: a total per verdict, on either side of the 60 / 80 thresholds
TOTALS = {"mastered": 80, "partial": 79, "not_understood": 59}


def test_smart_is_one_dag_scoring_first_then_the_agents_the_verdict_selects(vault: Path) -> None:
    path = canvas_in(vault)
    job = plan_canvas(path, builtin_blueprints())  # no --agents: smart by default
    assert job.smart
    assert len(job.targets) >= 3
    # each target gets a known verdict from its scoring call; other calls go to the sim
    verdicts = ["mastered", "partial", "not_understood"]
    verdict_of = {t.node_id: verdicts[i % 3] for i, t in enumerate(job.targets)}
    scoring_prompt = {
        str(t.prompt): verdict_of[str(t.partition)] for t in job.tasks if t.agent == "scoring-agent"
    }
    sim = fanout.SimProvider(fanout.SimConfig(base_latency_s=0.0))

    async def answer(req: fanout.Request) -> fanout.Completion:
        verdict = scoring_prompt.get(str(req.messages[0]["content"]))
        if verdict is None:
            return await sim.complete(req)
        total = TOTALS[verdict]
        parts = [total // 4 + (i < total % 4) for i in range(4)]  # four parts summing to it
        score: dict[str, Any] = dict(
            zip(("accuracy", "imagery", "completeness", "originality"), parts, strict=True)
        )
        score |= {"total": total, "verdict": verdict, "feedback": "讲清楚了构造，还差真值表。"}
        return fanout.Completion(text=json.dumps(score, ensure_ascii=False), model="sim-1")

    run, _ = asyncio.run(run_job(job, provider=fanout.CallableProvider(answer)))
    for target in job.targets:
        assert run.result(task_key(target.node_id, "scoring-agent")).ok  # type: ignore[union-attr]
        ran = set()
        skipped = set()
        for t in job.tasks:
            if t.partition != target.node_id or t.agent == "scoring-agent":
                continue
            r = run.result(t)
            assert r is not None
            if r.state is TaskState.DONE:
                ran.add(t.agent)
            else:
                assert r.state is TaskState.SKIPPED
                assert r.error is not None
                assert r.error.kind == "not_selected"
                skipped.add(t.agent)
        assert ran == SMART_SELECTS[verdict_of[target.node_id]], target.node_id
        assert ran | skipped == set().union(*SMART_SELECTS.values())


def test_smart_followers_start_only_after_scoring() -> None:
    order: list[str] = []

    async def answer(req: fanout.Request) -> str:
        is_score = req.json_schema is not None and "verdict" in json.dumps(req.json_schema)
        order.append("score" if is_score else "follow")
        if is_score:
            return json.dumps(
                {
                    "accuracy": 5,
                    "imagery": 5,
                    "completeness": 5,
                    "originality": 5,
                    "total": 20,
                    "verdict": "not_understood",
                    "feedback": "再想想条件和结论的关系。",
                },
                ensure_ascii=False,
            )
        return "好的解释。" * 300 + "\n\n| a | b | c |\n| --- | --- | --- |\n| 1 | 2 | 3 |"

    bps = builtin_blueprints()
    target_inputs = {
        "question": "什么是逆否命题？",
        "learner_text": "不知道。",
        "topic": "离散数学",
    }
    scores = [bps["scoring-agent"].task(target_inputs, key="t/scoring-agent", partition="t")]
    from fanout.canvas.workflow import DEFAULT_SMART, _selected_by

    follow = [
        bps[a].task(
            {k: v for k, v in target_inputs.items() if k in bps[a].inputs},
            key=f"t/{a}",
            partition="t",
            depends_on=scores,
            on_dependency_failure="run",
            when=_selected_by(frozenset(v for v, ns in DEFAULT_SMART.items() if a in ns)),
        )
        for a in ("clarification-path", "memory-anchor")
    ]

    async def main() -> fanout.Run:
        async with fanout.Engine(providers=fanout.CallableProvider(answer)) as engine:
            return await engine.run([*scores, *follow])

    run = asyncio.run(main())
    assert order[0] == "score"
    assert order.count("follow") == 1  # only clarification-path: the verdict was not_understood
    r = run.result("t/memory-anchor")
    assert r is not None
    assert r.state is TaskState.SKIPPED


def test_aggregation_modes(vault: Path) -> None:
    path = canvas_in(vault)
    agents = ["basic-decomposition", "deep-decomposition", "oral-explanation"]
    job = plan_canvas(path, builtin_blueprints(), agents=agents)
    _, report = asyncio.run(run_job(job, "merged"))
    assert len(report.notes) == len(job.targets)  # one merged note per target
    text = (vault / report.notes[0].vault_path).read_text(encoding="utf-8")
    assert "## 基础拆解" in text
    assert "## 口语化解释" in text
    job = plan_canvas(path, builtin_blueprints(), agents=agents)
    _, report = asyncio.run(run_job(job, "decomposition"))
    names = sorted(Path(n.vault_path).name.split("-")[0] for n in report.notes)
    assert names.count("decomposition") == len(job.targets)
    assert names.count("oral") == len(job.targets)


def test_score_samples_become_one_summary_note(vault: Path) -> None:
    path = canvas_in(vault)
    job = plan_canvas(path, builtin_blueprints(), agents=["scoring-agent"], samples=3)
    assert len(job.tasks) == 3 * len(job.targets)
    assert sorted({t.sample for t in job.tasks}) == [0, 1, 2]
    _, report = asyncio.run(run_job(job))
    assert len(report.notes) == len(job.targets)
    text = (vault / report.notes[0].vault_path).read_text(encoding="utf-8")
    assert "3 samples" in text
    assert "median" in text


def test_median_verdict() -> None:
    def r(total: int | None, ok: bool = True) -> Result:
        t = Task("x")
        return Result(
            t,
            TaskState.DONE if ok else TaskState.FAILED,
            data=None if total is None else {"total": total},
        )

    assert median_verdict([r(50), r(85), r(90)]) == "mastered"
    assert median_verdict([r(65), r(10, ok=False)]) == "partial"
    assert median_verdict([r(None), r(10, ok=False)]) is None


def test_unknown_agent_and_bad_samples_are_config_errors(vault: Path) -> None:
    with pytest.raises(ConfigError, match="unknown agent 'nope'; known agents: basic-"):
        plan_canvas(canvas_in(vault), builtin_blueprints(), agents=["nope"])
    with pytest.raises(ConfigError, match="--samples 0"):
        plan_canvas(canvas_in(vault), builtin_blueprints(), agents=["memory-anchor"], samples=0)


def test_failures_leave_the_other_notes_and_are_reported(vault: Path) -> None:
    path = canvas_in(vault)
    job = plan_canvas(path, builtin_blueprints(), agents=["memory-anchor", "oral-explanation"])

    from fanout.errors import BadRequest

    async def flaky(req: fanout.Request) -> str:
        if "oral" in json.dumps(req.messages, ensure_ascii=False).lower():
            raise BadRequest("model refused")
        return "记忆锚点：" + "像一摞盘子。" * 60

    run, report = asyncio.run(run_job(job, provider=fanout.CallableProvider(flaky)))
    m = run.metrics()
    # one oral-explanation per target fails (a refusal is not retried), every other is done
    assert m["failed"] == len(job.targets)
    assert m["done"] == len(job.targets)
    assert {r.task.agent for r in await_results(run) if not r.ok} == {"oral-explanation"}
    assert len(report.notes) == m["done"]


def await_results(run: Any) -> list[Any]:
    return [run.result(t) for t in run.tasks]


def test_aggregation_mode_is_parsed_once_at_the_edge() -> None:
    from fanout.canvas.aggregate import MODES, parse_mode

    assert [parse_mode(m) for m in MODES] == list(MODES)
    with pytest.raises(ConfigError, match="individual, merged, decomposition, score"):
        parse_mode("average")
