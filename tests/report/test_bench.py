"""`fanout bench` at a small scale: the table, the figures and the pictures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fanout.report.bench import ideal, jobs_of
from tests.e2e.test_cli_batch import fanout

pytestmark = pytest.mark.e2e


def test_the_sets_are_the_notes() -> None:
    assert [len(jobs_of(f"agents-{n}")) for n in (4, 8, 16)] == [4, 8, 16]
    # the Phase 4 example: clarification-path 9, oral-explanation 7, memory-anchor 2.5 twice
    assert ideal(jobs_of("agents-4")) == (21.0, 9.0)
    pipe = jobs_of("pipeline")
    layers = [sum(1 for j in pipe if j.agent == f"第{d}层") for d in (1, 2, 3, 4)]
    assert layers == [55, 12, 4, 1]
    by_key = {j.key: j for j in pipe}
    assert sorted(len(j.deps) for j in pipe if j.agent == "第2层") == [4] * 5 + [5] * 7
    assert {d for j in pipe if j.agent == "第2层" for d in j.deps} == {
        j.key for j in pipe if j.agent == "第1层"
    }
    assert all(by_key[d].agent == "第3层" for d in by_key["整体-1"].deps)
    # 55 items of 10..15 units + 17 syntheses of 5; the longest chain is 15 + 5 + 5 + 5
    assert ideal(pipe) == (772.5, 30.0)


def test_bench_prints_the_table_and_writes_the_pictures(tmp_path: Path) -> None:
    out = tmp_path / "基准"
    p = fanout("bench", "--out", out, "--sets", "agents-4,pipeline", "--scale", "0.002")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert "share of ideal" in lines[1]
    table = {ln.split()[0]: ln.split() for ln in lines[2:4]}
    assert set(table) == {"agents-4", "pipeline"}
    figures = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in figures["rows"]}
    for r in rows.values():
        assert r["speedup"] == pytest.approx(r["serial_s"] / r["parallel_s"])
        assert r["share"] == pytest.approx(r["speedup"] / r["ideal_speedup"])
        # no schedule beats the ideal by more than the timer's noise
        assert r["parallel_s"] >= r["ideal_parallel_s"] * 0.95
    assert rows["pipeline"]["ideal_speedup"] == pytest.approx(25.75)
    # measured in one run: the parallel pipeline is far quicker than the serial one
    assert rows["pipeline"]["speedup"] > 2
    assert table["pipeline"][1] == "72"
    names = {f.name for f in out.iterdir()}
    for s in ("agents-4", "pipeline"):
        for mode in ("serial", "parallel"):
            assert {f"{s}-{mode}.{ext}" for ext in ("png", "html", "json")} <= names
    assert {"bench.png", "bench.json", "bench.db"} <= names
    trace = json.loads((out / "pipeline-parallel.json").read_text(encoding="utf-8"))
    # one complete event per attempt; the waits (the store records them) in their category
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "wait") == 72
    waits = {e["name"] for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] == "wait"}
    assert "deps" in waits
    # 12 + 4 x 3 + 4 dependency arrows... one per (dependency, dependent) pair: 55 + 12 + 4
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "s") == 55 + 12 + 4


def test_an_unknown_set_is_refused_before_anything_runs(tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = fanout("bench", "--out", out, "--sets", "agents-4,agents-5")
    assert p.returncode == 2
    assert "agents-5" in p.stderr
    assert p.stderr.count("\n") == 1
    assert not out.exists()
