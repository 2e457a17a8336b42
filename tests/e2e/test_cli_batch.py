"""`fanout batch` as a user runs it: a subprocess, real files, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def fanout(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fanout", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=e,
        cwd=ROOT,
    )


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


FAST = ("--sim-latency", "2ms")


def test_example_batch_runs_clean_and_says_it_uses_the_simulator(tmp_path: Path) -> None:
    out = tmp_path / "结果" / "results.jsonl"
    out.parent.mkdir()
    p = fanout("batch", ROOT / "examples" / "jobs.jsonl", "-o", out, "--concurrency", "16", *FAST)
    assert p.returncode == 0, p.stderr
    notes = [x for x in p.stderr.splitlines() if "simulator" in x]
    assert len(notes) == 1
    n_in = sum(1 for x in (ROOT / "examples" / "jobs.jsonl").read_text().splitlines() if x.strip())
    rows = read_jsonl(out)
    assert len(rows) == n_in
    assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)
    for label in ("wall time", "serial estimate", "speedup", "utilisation", "p95", "retries"):
        assert label in p.stdout
    assert f"wrote {n_in} lines" in p.stdout


def test_json_summary_and_failures_give_exit_1_with_one_line_each(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "离散数学.jsonl",
        [{"id": f"q{i}", "prompt": f"解释第{i}个概念"} for i in range(60)],
    )
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch", src, "-o", out, "--json", "--attempts", "1", "--sim-faults", "500=0.3", *FAST
    )
    assert p.returncode == 1, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    rows = read_jsonl(out)
    assert len(rows) == 60
    failed = [r for r in rows if r["error"]]
    assert summary["failed"] == len(failed) > 0
    assert summary["failures_by_kind"] == {"server_error": len(failed)}
    assert all(r["response"]["status_code"] == 500 for r in failed)
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(60)]  # input order


def test_retries_recover_transient_faults(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(40)]
    )
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--json",
        "--attempts",
        "6",
        "--sim-faults",
        "500=0.2,529=0.1",
        *FAST,
    )
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0, p.stderr
    assert summary["done"] == 40
    assert summary["retries"] > 0


def test_strict_refuses_bad_lines_and_writes_nothing(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, "{oops", {"id": "b"}])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--strict", *FAST)
    assert p.returncode == 2
    assert "line 2: not valid JSON" in p.stderr
    assert "line 3 (b)" in p.stderr
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [src]  # no temp file either


def test_a_batch_whose_every_line_is_bad_is_refused_and_starts_no_run(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "全坏.jsonl",
        [{"prompt": "没有编号"}, "{坏的", {"id": "乙", "prompt": 3}, {"id": "丙", "prompt": ""}],
    )
    out = tmp_path / "结果.jsonl"
    home = tmp_path / "家"
    p = fanout("batch", src, "-o", out, *FAST, env={"FANOUT_HOME": str(home)})
    assert p.returncode == 2, p.stderr
    said = p.stderr.splitlines()
    for n in (1, 2, 3, 4):  # each bad line named, one line each, as with --strict
        assert sum(line.startswith(f"fanout: line {n}") for line in said) == 1, p.stderr
    assert "every line is bad (4 of 4): nothing was run and no output written" in p.stderr
    assert "(resume with" not in p.stderr  # no run was made
    assert [x.name for x in tmp_path.iterdir() if x != home] == [src.name]  # no output, no temp
    store = home / "fanout.db"
    if store.exists():
        with sqlite3.connect(store) as db:
            assert db.execute("SELECT count(*) FROM runs").fetchone() == (0,)


def test_without_strict_bad_lines_get_error_lines_and_exit_1(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, "{oops"])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, *FAST)
    assert p.returncode == 1
    rows = read_jsonl(out)
    assert [r["error"] is None for r in rows] == [True, False]
    assert rows[1]["error"]["code"] == "invalid_line"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--provider", "openai"), "OPENAI_API_KEY"),
        (("--provider", "nosuch"), "not configured; use one of"),
        (("--sim-faults", "418=0.5"), "418"),
        (("--sim-latency", "fast"), "fast"),
        (("--order", "random"), "--order"),
        (("--rpm", "0"), "--rpm"),
    ],
)
def test_config_errors_exit_2_with_one_message_and_no_output(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert message in p.stderr
    assert "Traceback" not in p.stderr
    assert not out.exists()


def test_missing_input_and_bad_output_paths(tmp_path: Path) -> None:
    p = fanout("batch", tmp_path / "无.jsonl", "-o", tmp_path / "o.jsonl")
    assert p.returncode == 2
    assert "no such file" in p.stderr
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    p = fanout("batch", src, "-o", tmp_path / "missing-dir" / "o.jsonl")
    assert p.returncode == 2
    assert "does not exist" in p.stderr
    p = fanout("batch", src, "-o", src)
    assert p.returncode == 2
    assert "is the input file" in p.stderr
    assert read_jsonl(src) == [{"id": "a", "prompt": "x"}]  # the input is untouched
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    p = fanout("batch", empty, "-o", tmp_path / "o.jsonl")
    assert p.returncode == 2
    assert "no request lines" in p.stderr


def test_deadline_cancels_the_rest_and_still_writes_every_line(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(30)]
    )
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--json",
        "--concurrency",
        "2",
        "--deadline",
        "0.3",
        "--sim-latency",
        "100ms",
    )
    assert p.returncode == 1, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["cancelled"] > 0
    assert summary["done"] + summary["cancelled"] == 30
    rows = read_jsonl(out)
    assert len(rows) == 30
    assert {r["error"]["code"] for r in rows if r["error"]} == {"cancelled"}


def test_ctrl_c_leaves_the_run_resumable_and_resume_writes_every_line(tmp_path: Path) -> None:
    import signal
    import time

    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(200)]
    )
    out = tmp_path / "out.jsonl"
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout",
            "batch",
            str(src),
            "-o",
            str(out),
            "--json",
            "--concurrency",
            "4",
            "--sim-latency",
            "50ms",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=e,
        cwd=ROOT,
    )
    # the first line names the run (and how to resume it) as it starts
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("run r-"), first
    run_id = first.split()[1]
    assert f"(resume with: fanout resume {run_id})" in first
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert f"resume with: fanout resume {run_id}" in stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["status"] == "interrupted"
    assert 0 < summary["done"] < 200
    assert summary["cancelled"] == 0  # nothing was given up: the rest waits for a resume
    assert not out.exists()  # the file is written once, when the run ends
    p = fanout("runs", "--json")
    row = next(r for r in json.loads(p.stdout) if r["run_id"] == run_id)
    assert (row["status"], row["done"]) == ("interrupted", summary["done"])
    p = fanout("resume", run_id, "--json")
    assert p.returncode == 0, p.stderr
    again = json.loads(p.stdout.strip().splitlines()[-1])
    assert again["done"] == 200
    rows = read_jsonl(out)
    assert [r["custom_id"] for r in rows] == [f"q{i}" for i in range(200)]
    assert all(r["error"] is None for r in rows)
