"""`fanout canvas plan | run` say how targets were chosen and why a node is not one
(issue 12 point 4, issue 11 point 10): the same lines in both commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import fanout

pytestmark = pytest.mark.e2e


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def text(node_id: str, body: str, x: int, y: int, colour: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "id": node_id,
        "type": "text",
        "text": body,
        "x": x,
        "y": y,
        "width": 400,
        "height": 200,
    }
    if colour is not None:
        raw["color"] = colour
    return raw


def canvas(tmp_path: Path, extra: list[Any] | None = None, edges: list[Any] | None = None) -> Path:
    vault = tmp_path / "笔记库"
    (vault / ".obsidian").mkdir(parents=True)
    nodes = [
        {
            "id": "g",
            "type": "group",
            "label": "集合论",
            "x": 0,
            "y": 0,
            "width": 1000,
            "height": 700,
        },
        text("q", "什么是幂集？", 50, 50),
        text("a", "幂集是一个集合所有子集组成的集合。", 50, 300),
        text("empty", "", 500, 50),
        {
            "id": "web",
            "type": "link",
            "url": "https://zh.wikipedia.org/wiki/冪集",
            "x": 500,
            "y": 300,
            "width": 300,
            "height": 200,
        },
        text("y", "对称差是只属于其中一个集合的元素。", 2000, 0, "3"),
        *(extra or []),
    ]
    links = [{"id": "e", "fromNode": "q", "toNode": "a", "label": "个人理解"}, *(edges or [])]
    path = vault / "离散 数学.canvas"
    path.write_text(json.dumps({"nodes": nodes, "edges": links}, ensure_ascii=False), "utf-8")
    return path


def run(path: Path, tmp_path: Path, *args: str) -> Any:
    return fanout(
        "canvas", "run", path, "--agents", "memory-anchor", "--sim-latency", "1ms", *args,
        env=home(tmp_path),
    )  # fmt: skip


def test_ids_of_an_empty_node_and_a_link_say_why_in_plan_and_run(tmp_path: Path) -> None:
    path = canvas(tmp_path)
    before = path.read_bytes()
    p = fanout("canvas", "plan", path, "--ids", "empty,web", env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "targets: 0 by ids empty, web (colour not used), skipped 2" in p.stdout
    assert "skipped: empty: empty: nothing to explain yet" in p.stdout
    assert "skipped: web: a link node" in p.stdout
    assert "colour '3'" not in p.stdout
    for ids in ("empty", "web"):
        r = run(path, tmp_path, "--ids", ids)
        assert r.returncode == 2
        assert "of colour" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = run(path, tmp_path, "--ids", "empty")
    assert "no target by ids empty (colour not used): empty: empty: nothing to explain" in r.stderr
    r = run(path, tmp_path, "--ids", "web")
    assert "web: a link node (a web page)" in r.stderr
    assert path.read_bytes() == before
    assert not (tmp_path / "home").exists() or not list((tmp_path / "home").rglob("*.canvas"))


def test_a_group_alone_targets_its_text_nodes_and_with_yellow_only_yellow(
    tmp_path: Path,
) -> None:
    path = canvas(tmp_path)
    p = fanout("canvas", "plan", path, "--group", "集合论", "--agents", "memory-anchor")
    assert p.returncode == 0, p.stderr
    assert "targets: 2 by every text node in group '集合论', skipped 2" in p.stdout
    assert "● q: 什么是幂集？" in p.stdout
    assert "● a: 幂集是" in p.stdout
    p = fanout("canvas", "plan", path, "--group", "集合论", "--yellow", "3")
    assert p.returncode == 0, p.stderr
    assert "targets: 0 by colour \"3\" in group '集合论'" in p.stdout
    r = run(path, tmp_path, "--group", "集合论", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["done"] == 2
    assert out["targets_by"] == "every text node in group '集合论'"
    assert {s["node"] for s in out["skipped"]} == {"empty", "web"}


def test_run_prints_the_warnings_and_skips_plan_prints(tmp_path: Path) -> None:
    bad = text("bad", "集合的并：属于 A 或属于 B。", 3000, 0, "3")
    bad["x"] = "100"
    no_id = {"type": "text", "text": "无编号", "x": 0, "y": 900, "width": 100, "height": 60}
    dangling = {"id": "e9", "fromNode": "y", "toNode": "不存在"}
    swatch = text("legend", "黄色 = 我的理解", 3000, 900, "3")
    swatch.update(width=120, height=40)
    path = canvas(tmp_path, [bad, no_id, swatch], [dangling])
    plan = fanout("canvas", "plan", path, "--agents", "memory-anchor", env=home(tmp_path))
    assert plan.returncode == 0, plan.stderr
    r = run(path, tmp_path)
    assert r.returncode == 0, r.stderr
    shown = [line for line in plan.stdout.splitlines() if line.startswith(("warning", "skipped"))]
    assert len(shown) == 5
    for line in shown:
        assert line in r.stdout.splitlines()
    assert 'targets: 1 by colour "3", skipped 2' in r.stdout
    js = run(path, tmp_path, "--json")
    out = json.loads(js.stdout.strip().splitlines()[-1])
    assert len(out["warnings"]) + len(out["skipped"]) == 5
    assert any(line.startswith("skipped: bad: malformed node") for line in shown)
    assert any(line.startswith("skipped: legend: a legend swatch") for line in shown)
    assert any("nodes[" in line and line.startswith("warning") for line in shown)
    assert any("不存在" in line and line.startswith("warning") for line in shown)
