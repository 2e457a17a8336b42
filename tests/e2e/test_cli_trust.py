"""Inputs that crashed, hung or spent money before failing (issue 11), as a user meets them:
the CLI as a subprocess. A bad line is a bad line (its number, the rest runs); a bad file,
flag or config is one line, exit 2, nothing written and no run started."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cli_batch import ROOT, fanout, read_jsonl, write_jsonl

pytestmark = pytest.mark.e2e

FAST = ("--sim-latency", "1ms", "--no-progress")
GOOD = [{"id": f"问{i}", "prompt": f"解释第{i}章"} for i in range(3)]


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def assert_refused(p: subprocess.CompletedProcess[str], *words: str) -> None:
    """Exit 2 with one line on stderr (naming `words`), nothing on stdout, no traceback."""
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stdout == ""
    for w in words:
        assert w in p.stderr, p.stderr


def no_runs(tmp_path: Path) -> None:
    p = fanout("runs", env=home(tmp_path))
    assert p.stdout.strip() == "no runs yet", p.stdout


# -- bad lines: refused with their number before the run starts, the rest runs -------------

BAD_LINES = {
    "nested 1,000 deep": '{"id":"deep","prompt":' + "[" * 1000 + "]" * 1000 + "}",
    "a 5,000-digit integer": '{"id":"big","prompt":"x","max_tokens":' + "9" * 5000 + "}",
    "a lone surrogate": '{"id":"sur","prompt":"secret-body \\ud800 there"}',
    "a lone surrogate in a key": '{"id":"sk","prompt":"x","\\udfff":1}',
    "nested 150 deep in a body": json.dumps(
        {"custom_id": "b", "body": {"messages": [{"role": "user", "content": "x"}], "x": []}}
    ).replace("[]", "[" * 150 + "]" * 150),
}


@pytest.mark.parametrize("name", sorted(BAD_LINES))
def test_a_line_that_crashed_the_parser_is_a_bad_line_with_its_number(
    tmp_path: Path, name: str
) -> None:
    src = write_jsonl(tmp_path / "输入.jsonl", [*GOOD[:2], BAD_LINES[name], GOOD[2]])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, *FAST, env=home(tmp_path))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert re.search(r"^fanout: line 3\b.*: ", p.stderr, re.M), p.stderr
    assert "secret-body" not in p.stderr + p.stdout  # a request body is never echoed
    rows = read_jsonl(out)
    assert len(rows) == 4
    assert [r["error"] is None for r in rows] == [True, True, False, True]
    assert rows[2]["error"]["code"] == "invalid_line"
    assert re.search(r"^bad lines +1, not run \(see line 3\)$", p.stdout, re.M), p.stdout
    assert "exit 1: 1 bad line, see line 3" in p.stderr
    # --strict: the same line stops everything before it starts
    out2 = tmp_path / "strict.jsonl"
    s = fanout("batch", src, "-o", out2, "--strict", *FAST, env=home(tmp_path))
    assert s.returncode == 2, s.stderr
    assert "Traceback" not in s.stderr
    assert not out2.exists()


def test_a_line_over_max_line_is_refused_not_sent(tmp_path: Path) -> None:
    long_line = json.dumps({"id": "long", "prompt": "长" * 2000}, ensure_ascii=False)
    src = write_jsonl(tmp_path / "in.jsonl", [GOOD[0], long_line])
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--max-line", "5kB", *FAST, env=home(tmp_path))
    assert p.returncode == 1, p.stderr
    assert "line 2: 6,0" in p.stderr  # its size, in bytes (three per character)
    assert "--max-line" in p.stderr
    rows = read_jsonl(out)
    assert rows[1]["error"]["code"] == "invalid_line"
    # raised, it is sent
    p = fanout("batch", src, "-o", out, "--max-line", "1MB", *FAST, env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert all(r["error"] is None for r in read_jsonl(out))


def test_summary_lines_end_without_spaces(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [*GOOD, "not json"])
    p = fanout("batch", src, "-o", tmp_path / "o.jsonl", *FAST, env=home(tmp_path))
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    assert lines[0].startswith("tasks ")
    assert all(line == line.rstrip() for line in lines), lines


# -- bad files, flags and configs: one line, exit 2, nothing written, no run ---------------


def alias_bomb() -> str:
    """Nine anchors, each nine aliases of the one before (342 bytes for 387 million)."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


CONFIGS = {
    "yaml nested 600 deep": ("concurrency: 4\nx: " + "[" * 600 + "]" * 600, "nested"),
    "yaml 5,000-digit integer": ("concurrency: " + "9" * 5000, "4,300"),
    "yaml alias bomb": (alias_bomb(), "aliases"),
    "sim faults bogus": ("providers:\n  sim: {type: sim, options: {faults: bogus}}", "bogus"),
    "sim faults 5": ("providers:\n  sim: {type: sim, options: {faults: 5}}", "faults"),
    "sim latency fast": ("providers:\n  sim: {type: sim, options: {latency: fast}}", "fast"),
    "command unbalanced quote": (
        'providers:\n  c: {type: command, command: "echo \'hi"}',
        "quotes",
    ),
    "command not installed": (
        "providers:\n  c: {type: command, command: fanout-no-such-program -p}",
        "fanout-no-such-program",
    ),
    "concurrency 1e9": ("concurrency: 1000000000", "at most 100000"),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_config_that_crashed_or_hung_is_one_line_and_exit_2(tmp_path: Path, name: str) -> None:
    text, word = CONFIGS[name]
    cfg = tmp_path / "配置.yaml"
    cfg.write_text(text, encoding="utf-8")
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--config", cfg, "--no-progress", env=home(tmp_path))
    assert_refused(p, word, str(cfg))
    assert "lol" not in p.stderr  # the expanded value is never written out
    assert not out.exists()
    assert list(tmp_path.glob(".out.jsonl.*")) == []
    no_runs(tmp_path)


FLAGS = {
    "concurrency 1e9": (["--concurrency", "1000000000"], "at most 100,000"),
    "base-url not a url": (["--provider", "openai", "--base-url", "not-a-url"], "--base-url"),
    "python without a callable": (["--provider", "python"], "callable"),
    "command not installed": (
        ["--provider", "command", "--command", "fanout-no-such-program -p"],
        "not found on PATH",
    ),
    "command unbalanced quote": (["--provider", "command", "--command", "claude 'p"], "quote"),
    "max-line not a size": (["--max-line", "lots"], "--max-line"),
    # a byte that is not UTF-8 reaches Python as a lone surrogate (os.fsencode gives it back)
    "model with a 0xff byte": (["--model", "m\udcff"], "--model is not UTF-8 text"),
}


@pytest.mark.parametrize("name", sorted(FLAGS))
def test_a_bad_flag_is_one_line_in_fanouts_words(tmp_path: Path, name: str) -> None:
    flags, word = FLAGS[name]
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, *flags, "--no-progress", env=home(tmp_path))
    assert_refused(p, word)
    assert "pydantic" not in p.stderr
    assert not out.exists()
    no_runs(tmp_path)


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "管道"
    os.mkfifo(path)
    return path


def test_a_fifo_as_input_or_config_is_refused_without_blocking(tmp_path: Path, fifo: Path) -> None:
    out = tmp_path / "out.jsonl"
    p = fanout("batch", fifo, "-o", out, *FAST, env=home(tmp_path))  # the helper's timeout
    assert_refused(p, "not a regular file")
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    p = fanout("batch", src, "-o", out, "--config", fifo, *FAST, env=home(tmp_path))
    assert_refused(p, "not a regular file")
    assert not out.exists()
    no_runs(tmp_path)


def test_an_output_folder_that_takes_no_file_is_refused_before_any_call(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    if os.geteuid() == 0:  # root writes through permissions; sysfs takes no new file
        folder = Path("/sys")
    else:
        folder = tmp_path / "只读"
        folder.mkdir()
        folder.chmod(0o555)
    p = fanout("batch", src, "-o", folder / "out.jsonl", *FAST, env=home(tmp_path))
    assert_refused(p, f"cannot write in {folder}")
    no_runs(tmp_path)  # refused before a run (and any call) was started


# -- providers: refused up front, or working ------------------------------------------------


@pytest.fixture(scope="module")
def clean_sim_server() -> Iterator[tuple[str, int]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", "0", "--latency", "1ms"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert m, line
    try:
        yield f"http://127.0.0.1:{m.group(1)}", int(m.group(1))
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


@pytest.mark.parametrize("suffix", ["", "/v1", "/v1/"])
def test_anthropic_with_a_base_url_works_without_a_key(
    clean_sim_server: tuple[str, int], tmp_path: Path, suffix: str
) -> None:
    url, _ = clean_sim_server
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--provider",
        "anthropic",
        "--base-url",
        url + suffix,
        "--model",
        "claude-sim",
        "--no-cache",
        "--no-progress",
        env=home(tmp_path),  # the helper drops every *_API_KEY
    )
    assert p.returncode == 0, p.stderr
    assert all(r["error"] is None for r in read_jsonl(out))


def test_sim_server_on_a_port_in_use_is_exit_2_naming_the_port(
    clean_sim_server: tuple[str, int],
) -> None:
    _, port = clean_sim_server
    with socket.create_connection(("127.0.0.1", port)):
        pass  # it is listening
    p = subprocess.run(
        [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert p.returncode == 2, p.stderr
    assert f"port {port}" in p.stderr
    assert "in use" in p.stderr
    assert "Traceback" not in p.stderr


# -- messages that say why ------------------------------------------------------------------


def test_a_task_failed_by_the_spent_retry_budget_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text("retry: {budget: 2, backoff_base_s: 0}\n", encoding="utf-8")
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(30)]
    )
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--config",
        cfg,
        "--sim-faults",
        "500=0.5",
        "--seed",
        "3",
        "--no-cache",
        *FAST,
        env=home(tmp_path),
    )
    assert p.returncode == 1, p.stderr
    failed = [r["error"] for r in read_jsonl(out) if r["error"] is not None]
    assert failed
    spent = [e for e in failed if "[retry budget spent (2/2)]" in e["message"]]
    assert spent, failed
    assert all(e["attempts"] < 3 for e in spent)  # each had attempts left
    assert re.search(r"^retries .*; retry budget spent \(2/2\)$", p.stdout, re.M), p.stdout
    report = fanout("report", p.stderr.split()[1], env=home(tmp_path))
    assert re.search(r"^retries .*; retry budget spent \(2/2\)$", report.stdout, re.M), report
    assert "exit 1: " in p.stderr
    assert "failed" in p.stderr.splitlines()[-1]


def test_a_prefix_of_several_runs_is_ambiguous_and_lists_them(tmp_path: Path) -> None:
    from tests.e2e.test_cli_runs import last_json

    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    ids = []
    for name in ("a", "b"):
        p = fanout("batch", src, "-o", tmp_path / f"{name}.jsonl", *FAST, env=home(tmp_path))
        assert p.returncode == 0, p.stderr
        ids.append(p.stderr.split()[1])
    prefix = next(ids[0][:i] for i in range(len(ids[0]), 0, -1) if ids[1].startswith(ids[0][:i]))
    assert len(prefix) >= 3  # "r-" and the date
    p = fanout("status", prefix, env=home(tmp_path))
    assert_refused(p, "ambiguous: 2 runs match", ids[0], ids[1], "batch, done")
    # a unique prefix works wherever a run id is taken
    unique = ids[1][:-2]
    assert not ids[0].startswith(unique)
    assert fanout("status", unique, env=home(tmp_path)).returncode == 0
    assert fanout("report", unique, env=home(tmp_path)).returncode == 0
    p = fanout("results", unique, "-o", tmp_path / "r.jsonl", env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert len(read_jsonl(tmp_path / "r.jsonl")) == 3
    p = fanout("cancel", unique, env=home(tmp_path))
    assert f"run {ids[1]} had already ended" in p.stdout
    # resuming the finished run says so, and sends nothing
    p = fanout("resume", unique, "--json", "--no-progress", env=home(tmp_path))
    assert p.returncode == 0, p.stderr
    assert f"run {ids[1]} had finished (3 done, 0 failed, of 3): nothing to send" in p.stderr
    assert last_json(p.stdout)["done"] == 3


def test_resuming_a_finished_run_with_failures_points_at_retry_failed(tmp_path: Path) -> None:
    from tests.e2e.test_cli_runs import last_json

    rows = [{"id": f"q{i}", "prompt": f"问题 {i}"} for i in range(20)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    faults = ("--sim-faults", "500=0.5", "--attempts", "1", "--seed", "5", "--no-cache")
    p = fanout("batch", src, "-o", tmp_path / "o.jsonl", *faults, *FAST, env=home(tmp_path))
    assert p.returncode == 1
    failed = sum(1 for r in read_jsonl(tmp_path / "o.jsonl") if r["error"])
    run_id = p.stderr.split()[1]
    p = fanout("resume", run_id, "--json", "--no-progress", env=home(tmp_path))
    assert p.returncode == 1
    assert f"({20 - failed} done, {failed} failed, of 20)" in p.stderr
    assert f"fanout resume {run_id} --retry-failed" in p.stderr
    assert last_json(p.stdout)["failed"] == failed


SLOW = ("--concurrency", "1", "--sim-latency", "300ms", "--no-progress", "--no-cache")


def test_results_of_a_running_run_say_it_is_still_running(tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "prompt": f"p{i}"} for i in range(40)]
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    env = {**os.environ, **home(tmp_path)}
    env = {k: v for k, v in env.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "batch", src, "-o", tmp_path / "o.jsonl", *SLOW],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=ROOT,
    )
    try:
        assert proc.stderr is not None
        run_id = proc.stderr.readline().split()[1]
        p = fanout("results", run_id, "-o", tmp_path / "partial.jsonl", env=home(tmp_path))
        assert p.returncode == 0, p.stderr
        assert re.search(rf"run {run_id} is still running \(\d+ of 40 done so far\)", p.stderr)
    finally:
        fanout("cancel", run_id, env=home(tmp_path))
        proc.communicate(timeout=60)


def test_cache_clear_asks_first_or_takes_yes(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", GOOD)
    assert (
        fanout("batch", src, "-o", tmp_path / "o.jsonl", *FAST, env=home(tmp_path)).returncode == 0
    )
    p = fanout("cache", "clear", env=home(tmp_path))  # stdin is no terminal: nothing to ask on
    assert_refused(p, "add --yes")
    assert json.loads(fanout("cache", "stats", "--json", env=home(tmp_path)).stdout)["entries"] == 3
    p = fanout("cache", "clear", "--yes", env=home(tmp_path))
    assert p.returncode == 0
    assert "removed 3 cached answers" in p.stdout


def test_file_names_that_are_not_utf8_are_refused_before_the_run(tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "in.jsonl", GOOD)
    odd = Path(os.fsdecode(bytes(tmp_path / "in") + b"\xff.jsonl"))
    odd.write_bytes(good.read_bytes())
    p = fanout("batch", odd, "-o", tmp_path / "out.jsonl", *FAST, env=home(tmp_path))
    assert_refused(p, "the input file's path is not UTF-8")
    out = Path(os.fsdecode(bytes(tmp_path / "out") + b"\xff.jsonl"))
    p = fanout("batch", good, "-o", out, *FAST, env=home(tmp_path))
    assert_refused(p, "(-o) is not UTF-8")
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(["in.jsonl", odd.name])
    no_runs(tmp_path)
