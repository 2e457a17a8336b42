"""`fanout resume RUN` goes on with every flag the run was started with (batch and canvas
runs alike), and a flag given to resume changes that one setting."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fanout.store.queries import load_snapshot
from fanout.store.sqlite import opened
from tests.e2e.test_cli_batch import ROOT, fanout, write_jsonl

pytestmark = pytest.mark.e2e


def _start_and_interrupt(tmp: Path, *args: str | Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(tmp / "home")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", *map(str, args), "--no-progress", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("run r-"), first
    time.sleep(0.8)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert json.loads(stdout.strip().splitlines()[-1])["status"] == "interrupted"
    return first.split()[1]


def _stored(tmp: Path, run_id: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FANOUT_HOME", str(tmp / "home"))
    with opened() as db:
        snap = load_snapshot(db, run_id)
    assert snap is not None
    return snap


def test_a_canvas_run_resumes_with_every_flag_it_was_started_with(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = tmp_path / "vault"
    shutil.copytree(ROOT / "examples" / "vault", vault)
    run_id = _start_and_interrupt(
        tmp_path,
        "canvas",
        "run",
        vault / "离散数学.canvas",
        "--agents",
        "oral-explanation,memory-anchor",
        "--concurrency",
        "3",
        "--no-cache",
        "--cache-ttl",
        "1h",
        "--deadline",
        "600",
        "--grace",
        "0",
        "--seed",
        "5",
        "--rpm",
        "6000",
        "--sim-latency",
        "300ms",
    )
    # --concurrency on resume used to be dropped for a canvas run
    home = {"FANOUT_HOME": str(tmp_path / "home")}
    p = fanout("resume", run_id, "--json", "--concurrency", "4", env=home)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["done"] == 8
    assert out["cached"] == 0  # --no-cache is kept
    snap = _stored(tmp_path, run_id, monkeypatch)
    assert [s.concurrency for s in snap.segments] == [3, 4]
    assert snap.config["options"] == {
        "cache": False,
        "cache_ttl_s": 3600.0,
        "deadline_s": 600.0,
        "grace_s": 0.0,
    }
    choice = snap.config["choice"]
    assert (choice["concurrency"], choice["seed"], choice["rpm"], choice["sim_latency"]) == (
        4,
        5,
        6000.0,
        "300ms",
    )


def test_a_flag_given_to_resume_changes_that_setting_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(20)]
    )
    out = tmp_path / "out.jsonl"
    run_id = _start_and_interrupt(
        tmp_path,
        "batch",
        src,
        "-o",
        out,
        "--concurrency",
        "2",
        "--grace",
        "0",
        "--cache-ttl",
        "2h",
        "--sim-latency",
        "200ms",
    )
    home = {"FANOUT_HOME": str(tmp_path / "home")}
    p = fanout("resume", run_id, "--json", "--concurrency", "4", env=home)
    assert p.returncode == 0, p.stderr
    assert len(out.read_text(encoding="utf-8").splitlines()) == 20
    snap = _stored(tmp_path, run_id, monkeypatch)
    assert [s.concurrency for s in snap.segments] == [2, 4]
    assert snap.config["choice"]["concurrency"] == 4  # the next resume goes on with 4
    assert snap.config["choice"]["sim_latency"] == "200ms"
    assert snap.config["options"]["cache_ttl_s"] == 7200.0
    assert snap.config["options"]["grace_s"] == 0.0


def test_a_resumed_completion_order_batch_writes_each_line_once(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", [*rows, "not json"])
    out = tmp_path / "out.jsonl"
    run_id = _start_and_interrupt(
        tmp_path,
        "batch",
        src,
        "-o",
        out,
        "--order",
        "completion",
        "--concurrency",
        "2",
        "--grace",
        "0",
        "--sim-latency",
        "200ms",
    )
    assert not out.exists()
    p = fanout("resume", run_id, "--json", env={"FANOUT_HOME": str(tmp_path / "home")})
    # the refused line is still in the output: the resumed run's exit code and summary
    # say so, as the start's did
    assert p.returncode == 1, p.stderr
    assert "1 bad line, see line 21" in p.stderr
    assert json.loads(p.stdout)["bad_lines"] == 1
    ids = [json.loads(x)["custom_id"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert ids[0] is None  # the refused line first, as when it started
    assert sorted(i for i in ids if i is not None) == sorted(r["id"] for r in rows)
    assert len(ids) == 21
