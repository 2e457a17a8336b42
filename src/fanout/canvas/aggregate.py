"""Merging the results of one partition (e.g. one canvas node) into documents.

- individual: one document per agent (the default);
- merged: one document with a section per agent (complementary sections);
- decomposition report: the sub-questions of the decomposition agents, duplicates removed;
- score summary: N samples of a numeric score, their median and spread (voting).

Hierarchical aggregation (a layer's results feeding the next) is a DAG of tasks, not a
merge: see `Task(depends_on=..., on_dependency_failure="run")`.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from fanout.errors import ConfigError
from fanout.tasks import Result

Mode = Literal["individual", "merged", "decomposition", "score"]
MODES: tuple[Mode, ...] = get_args(Mode)

DECOMPOSITION_AGENTS = ("basic-decomposition", "deep-decomposition")
SCORING_AGENT = "scoring-agent"
SCORE_DIMENSIONS = ("accuracy", "imagery", "completeness", "originality")
#: the verdict bands of the scoring agent (total 0-100)
MASTERED_AT = 80
PARTIAL_AT = 60

_TITLES = {
    "scoring-agent": "评分 / Score",
    "basic-decomposition": "基础拆解 / Basic decomposition",
    "deep-decomposition": "深度拆解 / Deep decomposition",
    "oral-explanation": "口语化解释 / Oral explanation",
    "clarification-path": "澄清路径 / Clarification path",
    "four-level-explanation": "四层次解释 / Four levels",
    "comparison-table": "对比表 / Comparison table",
    "memory-anchor": "记忆锚点 / Memory anchor",
    "example-teaching": "例题教学 / Worked examples",
    "verification-question-agent": "检验问题 / Check questions",
}


def parse_mode(value: str) -> Mode:
    """`value` as an aggregation `Mode`; `ConfigError` naming the allowed values."""
    for mode in MODES:
        if value == mode:
            return mode
    raise ConfigError(f"--aggregate {value!r}: use one of {', '.join(MODES)}")


@dataclass(frozen=True, slots=True)
class Document:
    """One merged output: `name` is the agent (or the merge's name), `text` Markdown."""

    name: str
    title: str
    text: str
    verdict: str | None = None


#: the documents `merged`, `decomposition_report` and `score_summary` make, and their titles
DOCUMENT_TITLES = {
    "explanations": "学习笔记 / Notes",
    "decomposition-report": "拆解报告 / Decomposition report",
    "score-summary": "评分汇总 / Score summary",
}


def title_of(agent: str) -> str:
    return _TITLES.get(agent, agent)


def verdict_for(total: float) -> str:
    if total >= MASTERED_AT:
        return "mastered"
    return "partial" if total >= PARTIAL_AT else "not_understood"


def render(agent: str, result: Result) -> str:
    """A result as Markdown: JSON answers of the known agents made readable, text as is."""
    data = result.data
    if isinstance(data, Mapping):
        if "sub_questions" in data:
            return _render_questions(data["sub_questions"])
        if "total" in data and "verdict" in data:
            return _render_score(data)
    return (result.text or "").strip()


def _render_questions(items: Any) -> str:
    lines = []
    for i, q in enumerate(items if isinstance(items, list) else [], 1):
        if not isinstance(q, Mapping):
            continue
        meta = " · ".join(str(q[k]) for k in ("type", "difficulty") if q.get(k))
        lines.append(f"{i}. **{q.get('text', '')}**" + (f"  _({meta})_" if meta else ""))
        if q.get("guidance"):
            lines.append(f"   - {q['guidance']}")
    return "\n".join(lines)


def _render_score(d: Mapping[str, Any]) -> str:
    total = d.get("total", 0)
    rows = [f"| {k} | {d.get(k, '-')} / 25 |" for k in SCORE_DIMENSIONS]
    out = [
        f"**{total} / 100 — {verdict_for(float(total))}**",
        "",
        "| dimension | score |",
        "| --- | --- |",
        *rows,
    ]
    if d.get("feedback"):
        out += ["", str(d["feedback"])]
    return "\n".join(out)


def individual(results: Mapping[str, Result]) -> list[Document]:
    """One document per agent that succeeded, in the order given."""
    docs = []
    for agent, r in results.items():
        if r.ok:
            verdict = _verdict_of(r) if agent == SCORING_AGENT else None
            docs.append(Document(agent, title_of(agent), render(agent, r), verdict))
    return docs


def merged(results: Mapping[str, Result], *, name: str = "explanations") -> list[Document]:
    """One document with a section per agent that succeeded (and a line per one that
    did not, so a reader sees what is missing and why)."""
    parts: list[str] = []
    verdict = None
    for agent, r in results.items():
        parts.append(f"## {title_of(agent)}")
        if r.ok:
            parts.append(render(agent, r))
            if agent == SCORING_AGENT:
                verdict = _verdict_of(r)
        else:
            why = r.error.message if r.error else str(r.state)
            parts.append(f"_({agent} did not answer: {why})_")
        parts.append("")
    if not any(r.ok for r in results.values()):
        return []
    title = DOCUMENT_TITLES.get(name, DOCUMENT_TITLES["explanations"])
    return [Document(name, title, "\n".join(parts).strip(), verdict)]


def decomposition_report(
    results: Mapping[str, Result], agents: Sequence[str] = DECOMPOSITION_AGENTS
) -> list[Document]:
    """The sub-questions of every decomposition agent, duplicates removed (same text up to
    case, spacing and punctuation), in the order the agents are listed."""
    seen: set[str] = set()
    items: list[Mapping[str, Any]] = []
    sources = []
    for agent in agents:
        r = results.get(agent)
        if r is None or not r.ok or not isinstance(r.data, Mapping):
            continue
        sources.append(agent)
        for q in r.data.get("sub_questions", []):
            if not isinstance(q, Mapping):
                continue
            k = _norm(str(q.get("text", "")))
            if k and k not in seen:
                seen.add(k)
                items.append(q)
    if not items:
        return []
    text = _render_questions(items) + "\n\n_" + " + ".join(sources) + "_"
    return [Document("decomposition-report", DOCUMENT_TITLES["decomposition-report"], text)]


def score_summary(samples: Iterable[Result]) -> Document | None:
    """N samples of the scoring agent: median and spread of each figure; the verdict from
    the median total."""
    data = [r.data for r in samples if r.ok and isinstance(r.data, Mapping)]
    if not data:
        return None
    keys = ("total", *SCORE_DIMENSIONS)
    rows = []
    for k in keys:
        vals = [float(d[k]) for d in data if isinstance(d.get(k), int | float)]
        if vals:
            med = statistics.median(vals)
            spread = max(vals) - min(vals)
            rows.append(f"| {k} | {med:g} | {spread:g} | {', '.join(f'{v:g}' for v in vals)} |")
    totals = [float(d["total"]) for d in data if isinstance(d.get("total"), int | float)]
    verdict = verdict_for(statistics.median(totals)) if totals else None
    text = "\n".join(
        [
            f"**{len(data)} samples — median total {statistics.median(totals):g} — {verdict}**"
            if totals
            else "",
            "",
            "| figure | median | spread | samples |",
            "| --- | --- | --- | --- |",
            *rows,
        ]
    ).strip()
    return Document("score-summary", DOCUMENT_TITLES["score-summary"], text, verdict)


def _verdict_of(r: Result) -> str | None:
    d = r.data
    if isinstance(d, Mapping) and isinstance(d.get("total"), int | float):
        return verdict_for(float(d["total"]))  # from the total, not the model's own label
    return None


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def _norm(text: str) -> str:
    return _NON_WORD.sub("", text).casefold()
