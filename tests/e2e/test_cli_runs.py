"""Durable runs from the command line: runs, status, report, results, cancel, resume, cache."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import ROOT, fanout, read_jsonl, write_jsonl

# seconds idle; a loaded 2-core machine can stretch a test past the default two minutes
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SAME_NUMBERS = (
    "total",
    "done",
    "failed",
    "wall_s",
    "serial_s",
    "speedup",
    "utilisation",
    "p50_s",
    "p95_s",
    "p50_by_agent",
    "p95_by_agent",
    "attempts",
    "retries",
    "retries_by_kind",
    "failures_by_kind",
    "input_tokens",
    "output_tokens",
    "cached",
)


@pytest.fixture(scope="module")
def sim_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", "0", "--latency", "2ms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    assert m
    try:
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def completed(url: str) -> int:
    with urllib.request.urlopen(url + "/stats") as r:
        return int(json.loads(r.read())["completed_total"])


def simple(n: int) -> list[dict[str, str]]:
    return [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(n)]


def last_json(text: str) -> Any:
    return json.loads(text.strip().splitlines()[-1])


def start(*args: str | Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.Popen(
        [sys.executable, "-m", "fanout", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )


def wait_in_flight(run_id: str, n: int, within: float = 60.0) -> None:
    """Until the store shows `n` attempts of `run_id` started and not ended: the calls are
    out (a state to wait on, where a fixed sleep would be too short on a loaded machine)."""
    db_path = Path(os.environ["FANOUT_HOME"]) / "fanout.db"
    give_up = time.monotonic() + within
    while time.monotonic() < give_up:
        if db_path.exists():
            with contextlib.closing(sqlite3.connect(db_path, timeout=30)) as db:
                row = db.execute(
                    "SELECT count(*) FROM attempts JOIN runs USING (rid) WHERE id = ?"
                    " AND started_at IS NOT NULL AND outcome IS NULL",
                    (run_id,),
                ).fetchone()
            if row[0] >= n:
                return
        time.sleep(0.02)
    raise AssertionError(f"{n} calls of {run_id} were not in flight within {within:g} s")


def read_until(proc: subprocess.Popen[str], text: str, within: float = 60.0) -> str:
    """stderr lines up to the first holding `text` (the process said it; returned whole)."""
    assert proc.stderr is not None
    seen = ""
    give_up = time.monotonic() + within
    while text not in seen:
        line = proc.stderr.readline()
        assert line, f"stderr ended before {text!r}: {seen!r}"
        assert time.monotonic() < give_up, seen
        seen += line
    return seen


def run_id_of(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("run r-"), first
    return first.split()[1]


def test_a_second_identical_batch_sends_zero_requests(sim_server: str, tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"问题 {i % 30}"} for i in range(40)]
    )
    via = ("--provider", "openai", "--base-url", sim_server + "/v1", "--json")
    before = completed(sim_server)
    p = fanout("batch", src, "-o", tmp_path / "a.jsonl", *via)
    assert p.returncode == 0, p.stderr
    assert completed(sim_server) - before == 30  # 40 lines, 30 different requests
    assert last_json(p.stdout)["cached"] == 10
    p = fanout("batch", src, "-o", tmp_path / "b.jsonl", *via)
    assert p.returncode == 0, p.stderr
    assert completed(sim_server) - before == 30  # nothing sent
    assert last_json(p.stdout)["cached"] == 40
    answers = [
        r["response"]["body"]["choices"][0]["message"]["content"]
        for r in read_jsonl(tmp_path / "b.jsonl")
    ]
    assert answers == [
        r["response"]["body"]["choices"][0]["message"]["content"]
        for r in read_jsonl(tmp_path / "a.jsonl")
    ]
    p = fanout("batch", src, "-o", tmp_path / "c.jsonl", *via, "--no-cache")
    assert completed(sim_server) - before == 70  # without the cache, all 40 again
    secret = "sk-test-never-stored-0123456789"
    p = fanout("batch", src, "-o", tmp_path / "d.jsonl", *via, env={"OPENAI_API_KEY": secret})
    assert p.returncode == 0, p.stderr
    home = Path(os.environ["FANOUT_HOME"])
    assert all(secret.encode() not in f.read_bytes() for f in home.iterdir() if f.is_file())
    p = fanout("cache", "stats", "--json")
    assert json.loads(p.stdout)["entries"] == 30
    p = fanout("cache", "clear")  # no terminal to ask on: it asks for --yes instead
    assert p.returncode == 2
    assert "add --yes" in p.stderr
    assert json.loads(fanout("cache", "stats", "--json").stdout)["entries"] == 30
    p = fanout("cache", "clear", "--yes")
    assert "removed 30 cached answers" in p.stdout
    assert json.loads(fanout("cache", "stats", "--json").stdout)["entries"] == 0


def test_runs_status_report_and_results_describe_a_finished_run(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "prompt": f"p{i}", "agent": f"a{i % 2}"} for i in range(30)]
    src = write_jsonl(tmp_path / "in.jsonl", [*rows, "{oops"])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--json", "--sim-faults", "500=0.2", "--attempts", "2")
    run_id = p.stderr.splitlines()[0].split()[1]
    summary = last_json(p.stdout)
    listed = json.loads(fanout("runs", "--json").stdout)
    assert listed[0]["run_id"] == run_id
    assert listed[0]["status"] in ("done", "failed")
    assert listed[0]["done"] == summary["done"]
    assert listed[0]["total"] == 30
    st = json.loads(fanout("status", run_id, "--json").stdout)
    assert st["states"].get("done", 0) == summary["done"]
    assert st["retries"] == summary["retries"]
    assert set(st["lanes"]) == {"default"}
    report = json.loads(fanout("report", run_id, "--json").stdout)
    assert {k: report[k] for k in SAME_NUMBERS} == {k: summary[k] for k in SAME_NUMBERS}
    text = fanout("report", run_id[:8]).stdout  # a unique prefix names the run
    for label in ("wall time", "serial estimate", "speedup", "utilisation", "retries", "  a0"):
        assert label in text
    exported = tmp_path / "export.jsonl"
    p = fanout("results", run_id, "-o", exported)
    assert "wrote 31 lines" in p.stdout
    assert [r["custom_id"] for r in read_jsonl(exported)] == [
        r["custom_id"] for r in read_jsonl(out)
    ]
    assert fanout("status", "r-nosuchrun").returncode == 2


def test_cancel_stops_a_run_in_another_process(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(50)]
    )
    proc = start(
        "batch",
        src,
        "-o",
        tmp_path / "out.jsonl",
        "--json",
        "--concurrency",
        "2",
        "--sim-latency",
        "2s",  # 50 s in all: the cancel, a new process, lands long before the end
    )
    run_id = run_id_of(proc)
    wait_in_flight(run_id, 2)
    p = fanout("cancel", run_id)
    assert f"asked the process running {run_id} to cancel it" in p.stdout
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1, stderr
    summary = last_json(stdout)
    assert summary["status"] == "cancelled"
    assert summary["cancelled"] > 0
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50  # every line, the rest cancelled
    assert json.loads(fanout("runs", "--json").stdout)[0]["status"] == "cancelled"


def test_twice_ctrl_c_stops_calls_in_flight_and_one_resume_at_a_time(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(12)]
    )
    out = tmp_path / "out.jsonl"
    proc = start("batch", src, "-o", out, "--json", "--concurrency", "4", "--sim-latency", "30s")
    run_id = run_id_of(proc)
    wait_in_flight(run_id, 4)
    proc.send_signal(signal.SIGINT)
    said = read_until(proc, "interrupted: starting nothing new")  # the first was handled
    proc.send_signal(signal.SIGINT)  # the calls take 30 s: the second Ctrl-C stops them
    stdout, stderr = proc.communicate(timeout=60)
    stderr = said + stderr
    assert proc.returncode == 130, stderr
    assert "stopping the calls in flight" in stderr
    summary = last_json(stdout)
    assert (summary["status"], summary["done"], summary["interrupted"]) == ("interrupted", 0, 4)
    st = json.loads(fanout("status", run_id, "--json").stdout)
    assert st["states"] == {"waiting": 12}
    # two resumes at once: one runs it, the other is told who does
    a = start("resume", run_id, "--json", "--concurrency", "12")
    assert run_id_of(a) == run_id
    b = fanout("resume", run_id)
    assert b.returncode == 2
    assert f"run {run_id} is being run by process {a.pid}" in b.stderr
    wait_in_flight(run_id, 12)
    a.send_signal(signal.SIGTERM)  # the same as a first Ctrl-C
    read_until(a, "interrupted: starting nothing new")
    a.send_signal(signal.SIGINT)
    a.communicate(timeout=60)
    assert a.returncode == 130


def test_a_changed_config_needs_reconfigure_to_resume(tmp_path: Path) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text("providers:\n  sim:\n    model: sim-a\n", encoding="utf-8")
    src = write_jsonl(tmp_path / "in.jsonl", simple(8))
    out = tmp_path / "out.jsonl"
    proc = start(
        "batch",
        src,
        "-o",
        out,
        "--json",
        "--config",
        cfg,
        "--concurrency",
        "4",
        "--sim-latency",
        "base=10ms",
    )
    run_id = run_id_of(proc)
    stdout, _ = proc.communicate(timeout=60)
    assert last_json(stdout)["done"] == 8
    cfg.write_text("providers:\n  sim:\n    model: sim-b\n", encoding="utf-8")
    p = fanout("resume", run_id)
    assert p.returncode == 2
    assert "default model: sim-a -> sim-b" in p.stderr
    assert "--reconfigure" in p.stderr
    p = fanout("resume", run_id, "--reconfigure", "--json")
    assert p.returncode == 0, p.stderr
    assert {r["response"]["body"]["model"] for r in read_jsonl(out)} == {"sim-b"}
    assert last_json(p.stdout)["attempts"] == 16  # each task ran once more, nothing else


def test_resume_retry_failed_reruns_exactly_the_failed_lines(tmp_path: Path) -> None:
    """A batch whose provider failed some lines (one attempt each): `fanout resume RUN
    --retry-failed` runs those again, and only those; the output then has every line done."""
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"问题 {i}"} for i in range(30)]
    )
    out = tmp_path / "out.jsonl"
    faults = ("--sim-faults", "500=0.4", "--attempts", "1", "--sim-latency", "1ms", "--seed", "5")
    p = fanout("batch", src, "-o", out, *faults, "--no-cache", "--json")
    assert p.returncode == 1, p.stderr
    first = last_json(p.stdout)
    failed = {r["custom_id"] for r in read_jsonl(out) if r.get("error")}
    assert first["failed"] == len(failed) > 0
    run_id = next(x.split()[1] for x in p.stderr.splitlines() if x.startswith("run r-"))
    p = fanout("resume", run_id, "--json")  # without the flag: nothing to do
    assert p.returncode == 1, p.stderr
    assert last_json(p.stdout)["failed"] == len(failed)
    p = fanout("resume", run_id, "--retry-failed=permanent", "--json")  # a class none has
    assert last_json(p.stdout)["failed"] == len(failed)
    p = fanout("resume", run_id, "--retry-failed", "--attempts", "8", "--json")
    assert p.returncode == 0, p.stderr
    second = last_json(p.stdout)
    assert (second["done"], second["failed"]) == (30, 0)
    assert second["attempts"] - first["attempts"] >= len(failed)  # each failed line ran again
    rows = read_jsonl(out)
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(30)]
    assert all(not r.get("error") for r in rows)
    p = fanout("resume", run_id, "--retry-failed=", "--json")
    assert p.returncode == 2
    assert "--retry-failed" in p.stderr


def test_a_cost_cap_stops_the_batch_and_a_higher_one_finishes_it(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"解释概念 {i}"} for i in range(60)]
    )
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--max-cost", "0.01", "--sim-latency", "1ms", "--json")
    assert p.returncode == 1, p.stderr
    first = last_json(p.stdout)
    assert first["status"] == "budget_exhausted"
    assert 0 < first["done"] < 60
    assert first["cost_usd"] <= 0.01
    assert "stopped at its cap" in p.stderr
    assert "--max-cost" in p.stderr
    run_id = next(x.split()[1] for x in p.stderr.splitlines() if x.startswith("run r-"))
    p = fanout("resume", run_id, "--max-cost", "1", "--json")
    assert p.returncode == 0, p.stderr
    second = last_json(p.stdout)
    assert (second["done"], second["status"]) == (60, "done")
    assert second["cost_usd"] > first["cost_usd"]
    assert len(read_jsonl(out)) == 60
