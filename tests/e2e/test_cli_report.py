"""`fanout report` says where the time went; cached answers are reported apart.

Each test runs the CLI as a subprocess on the simulator, against its own run store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
from pathlib import Path

import pytest

from tests.e2e.test_cli_batch import fanout, write_jsonl

pytestmark = pytest.mark.e2e


def _run_id(stderr: str) -> str:
    return stderr.splitlines()[0].split()[1]


def test_the_report_of_a_faulty_run_shows_where_the_time_went(tmp_path: Path) -> None:
    rows = [{"id": f"问{i}", "prompt": f"问题 {i}: explain idea {i}"} for i in range(30)]
    src = write_jsonl(tmp_path / "输入.jsonl", rows)
    p = fanout(
        "batch",
        src,
        "-o",
        tmp_path / "out.jsonl",
        "--sim-latency",
        "20ms",
        "--sim-faults",
        "429=0.1,500=0.1",
        "--rpm",
        "900",
        "--concurrency",
        "8",
        "--attempts",
        "8",
        "--json",
    )
    assert p.returncode == 0, p.stderr
    run_id = _run_id(p.stderr)
    text = fanout("report", run_id).stdout
    for line in (
        "throughput",
        "peak memory",
        "where time went",
        "rate-limited: RPM",
        "backing off between attempts",
        "running (attempts)",
        "lane default",
        "longest queue",
        "slowest",
    ):
        assert line in text, (line, text)
    m = json.loads(fanout("report", run_id, "--json").stdout)
    assert abs(sum(m["breakdown"].values()) - 1.0) < 1e-3
    assert m["breakdown"]["rpm"] > 0
    assert m["breakdown"]["backoff"] > 0
    assert m["peak_rss_mb"] > 0
    assert len(m["slowest"]) == 5
    slowest = m["slowest"][0]
    assert slowest["key"].startswith("问")
    assert abs(sum(slowest["seconds"].values()) - slowest["wall_s"]) < 1e-2
    # the price given wins over the table's
    priced = json.loads(fanout("report", run_id, "--json", "--price", "sim-1=10/20").stdout)
    expected = (m["input_tokens"] * 10 + m["output_tokens"] * 20) / 1e6
    assert abs(priced["report_cost_usd"] - expected) < 1e-6
    assert abs(m["report_cost_usd"] - expected / 10) < 1e-6  # sim-1 lists at 1/2
    bad = fanout("report", run_id, "--price", "sim-1=ten")
    assert bad.returncode == 2
    assert bad.stdout == ""
    assert bad.stderr.strip().count("\n") == 0
    assert "use MODEL=IN/OUT" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_run_answered_from_the_cache_says_so_and_reports_no_call_figures(
    tmp_path: Path,
) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(25)]
    )
    first = fanout("batch", src, "-o", tmp_path / "a.jsonl", "--sim-latency", "5ms")
    assert first.returncode == 0, first.stderr
    assert "from the cache" not in first.stdout
    again = fanout("batch", src, "-o", tmp_path / "b.jsonl", "--sim-latency", "5ms")
    assert again.returncode == 0, again.stderr
    out = again.stdout
    assert "25 answered from the cache, 0 calls made" in out
    assert re.search(r"speedup +- \(no calls made\)", out), out
    assert "0.00x" not in out
    assert "p50 0 ms" not in out
    report = fanout("report", _run_id(again.stderr)).stdout
    assert "25 answered from the cache, 0 calls made" in report
    assert "0.00x" not in report


def test_a_run_stored_before_spans_were_kept_is_reported_without_them(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(5)])
    p = fanout("batch", src, "-o", tmp_path / "a.jsonl", "--sim-latency", "2ms", "--no-cache")
    assert p.returncode == 0, p.stderr
    run_id = _run_id(p.stderr)
    db_path = Path(os.environ["FANOUT_HOME"]) / "fanout.db"
    with contextlib.closing(sqlite3.connect(db_path)) as db, db:
        db.execute("DELETE FROM spans")  # as an older fanout left it
    r = fanout("report", run_id)
    assert r.returncode == 0, r.stderr
    assert "not recorded (a run from before spans were kept)" in r.stdout
    assert "wall time" in r.stdout
