"""`fanout canvas` as a user runs it: plan, run, rerun, the original palette, bad input,
SIGKILL and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanout.canvas import load_canvas
from tests.benches import bench_module
from tests.e2e.test_cli_batch import ROOT, fanout

pytestmark = pytest.mark.e2e
FIXTURES = ROOT / "tests" / "canvas" / "fixtures" / "original-system"  # copies of ../shared


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    dst = tmp_path / "笔记库"
    shutil.copytree(ROOT / "examples" / "vault", dst)
    return dst


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def test_plan_shows_targets_and_tasks_and_writes_nothing(vault: Path, tmp_path: Path) -> None:
    path = vault / "离散数学.canvas"
    before = path.read_bytes()
    files = sorted(p for p in vault.rglob("*"))
    p = fanout("canvas", "plan", path, env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert "targets: 4" in p.stdout
    assert "placeholder" in p.stdout
    assert "scoring-agent" in p.stdout
    assert "nothing was written" in p.stdout
    assert path.read_bytes() == before
    assert sorted(p for p in vault.rglob("*")) == files


def test_run_then_rerun_adds_nothing(vault: Path, tmp_path: Path) -> None:
    path = vault / "离散数学.canvas"
    before = load_canvas(path)
    args = (
        "canvas",
        "run",
        path,
        "--agents",
        "oral-explanation,memory-anchor",
        "--json",
        "--sim-latency",
        "1ms",
    )
    p = fanout(*args, env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["done"] == 8
    assert out["nodes_added"] == 8
    after = load_canvas(path)
    assert len(after.nodes) == len(before.nodes) + 8
    assert after.data["nodes"][: len(before.nodes)] == before.data["nodes"]
    for note in out["notes"]:
        assert (vault / note).is_file()
    once = path.read_bytes()
    p = fanout(*args, env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert path.read_bytes() == once  # a rerun adds nothing


def test_original_system_palette_with_yellow_6(tmp_path: Path) -> None:
    src = FIXTURES / "test-review-canvas.canvas"  # three learner nodes in colour "6"
    work = tmp_path / "vault"
    work.mkdir()
    path = work / src.name
    data = json.loads(src.read_text(encoding="utf-8"))
    for node in data["nodes"]:  # the learner fills in their explanations
        if node.get("color") == "6":
            node["text"] = "我的理解：逆否命题与原命题同真同假，因为两者只在同一种情况下为假。"
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    before = json.loads(path.read_text(encoding="utf-8"))
    p = fanout(
        "canvas",
        "run",
        path,
        "--yellow",
        "6",
        "--agents",
        "memory-anchor",
        "--json",
        "--sim-latency",
        "1ms",
        env=home(tmp_path),
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["nodes_added"] == 3  # 3 nodes x 1 agent
    after = json.loads(path.read_text(encoding="utf-8"))
    n = len(before["nodes"])
    assert after["nodes"][:n] == before["nodes"]  # malformed nodes and all, untouched
    assert after["edges"][: len(before["edges"])] == before["edges"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", ".canvas:1:2: not valid JSON"),
        (
            '{"nodes": [{"id": "a", "type": "text", "text": "x", "x": 0, "y": 0, "width": 1, '
            '"height": 1}, {"id": "a", "type": "text", "text": "y", "x": 0, "y": 0, "width": 1, '
            '"height": 1}], "edges": []}',
            "ids must be unique",
        ),
    ],
)
def test_bad_canvas_exits_2_and_writes_nothing(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "坏的.canvas"
    path.write_text(content, encoding="utf-8")
    p = fanout("canvas", "run", path, "--agents", "memory-anchor", env=home(tmp_path))
    assert p.returncode == 2
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert path.read_text(encoding="utf-8") == content
    assert sorted(x.name for x in tmp_path.iterdir()) == ["坏的.canvas"]


def test_unknown_agent_and_no_targets_are_config_errors(vault: Path, tmp_path: Path) -> None:
    path = vault / "离散数学.canvas"
    p = fanout("canvas", "run", path, "--agents", "nope", env=home(tmp_path))
    assert p.returncode == 2
    assert "unknown agent 'nope'" in p.stderr
    p = fanout(
        "canvas",
        "run",
        vault / "线性代数-原系统配色.canvas",
        "--agents",
        "memory-anchor",
        env=home(tmp_path),
    )
    assert p.returncode == 2
    assert 'colour "6"' in p.stderr


@pytest.mark.timeout(600)  # seconds idle; minutes on a loaded machine
def test_sigkill_then_resume_finishes_without_resending(vault: Path, tmp_path: Path) -> None:
    """Against the sim-server, which counts its answers per request body (--stats-file):
    after the kill and the resume, every request committed before the kill was answered
    exactly once, and only a call in flight at the kill (answered, not yet committed) may
    have been answered twice."""
    crash = bench_module("crash")
    path = vault / "离散数学.canvas"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(home(tmp_path))
    db_path = tmp_path / "home" / "fanout.db"
    concurrency = 2
    with crash.sim_server(tmp_path, "300ms", env) as url:
        # no cache: a cached answer would hide a request sent again from the server's count
        via = ["--provider", "openai", "--base-url", url + "/v1", "--no-cache", "--no-progress"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "canvas", "run", str(path), "--agents",
             "oral-explanation,memory-anchor,comparison-table,example-teaching",
             "--concurrency", str(concurrency), *via],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )  # fmt: skip
        assert proc.stderr is not None
        run_id = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not run_id:
            line = proc.stderr.readline()
            if line.startswith("run r-"):
                run_id = line.split()[1]
        assert run_id
        crash.wait_for_progress(proc, db_path, run_id, 3)  # 4 committed, calls still out
        assert proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        at_kill = crash.settled_stats(url)
        committed = crash.committed(db_path, run_id)
        load_canvas(path)  # whatever was written so far parses
        p = fanout("resume", run_id, "--json", "--no-cache", env=home(tmp_path))
        assert p.returncode == 0, p.stderr
        final = crash.settled_stats(url)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["done"] == 16
    assert 4 <= len(committed) < 16
    assert len(final) == 16  # one request body per target x agent
    for h in committed:  # committed before the kill: never answered again
        assert final[h] == at_kill[h] == 1
    # answered by the old process but not committed when it died: the only ones that may
    # be answered twice; at most the calls in flight at once
    lost = {h for h, c in at_kill.items() if c == 1 and h not in committed}
    assert len(lost) <= concurrency
    assert {h: c for h, c in final.items() if c != 1} == dict.fromkeys(
        {h for h in lost if final[h] == 2}, 2
    )
    assert sum(final.values()) <= 16 + len(lost)
    status = fanout("status", run_id, env=home(tmp_path))
    assert status.returncode == 0
    after = load_canvas(path)
    ours = [n for n in after.nodes if n.id.startswith("fanout-")]
    assert len(ours) == 16  # every target x agent once, no copies
