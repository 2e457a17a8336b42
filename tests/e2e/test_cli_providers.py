"""`fanout batch` against real providers' wire formats (the sim-server in its own
process), the command provider, a fanout.yaml, agent lines, `fanout agents`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import ROOT, fanout, read_jsonl, write_jsonl

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim_server() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fanout",
            "sim-server",
            "--port",
            "0",
            "--latency",
            "2ms",
            "--faults",
            "429=0.1,500=0.1",
        ],
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
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats") as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def reset(url: str) -> None:
    urllib.request.urlopen(urllib.request.Request(url + "/stats/reset", method="POST")).close()


@pytest.mark.parametrize(
    ("provider", "suffix", "key_var"),
    [
        ("openai", "/v1", "OPENAI_API_KEY"),
        ("anthropic", "", "ANTHROPIC_API_KEY"),
    ],
)
def test_batch_through_a_real_sdk_with_faults_sends_nothing_twice(
    sim_server: str, tmp_path: Path, provider: str, suffix: str, key_var: str
) -> None:
    reset(sim_server)
    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"解释{i}"} for i in range(40)]
    )
    out = tmp_path / "out.jsonl"
    secret = "sk-test-abcdefghijklmnop1234"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--json",
        "--provider",
        provider,
        "--base-url",
        sim_server + suffix,
        "--model",
        "sim-1",
        "--attempts",
        "8",
        env={key_var: secret},
    )
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout.strip().splitlines()[-1])
    assert summary["done"] == 40
    assert summary["retries"] > 0
    s = stats(sim_server)
    assert s["completed_total"] == 40
    assert max(s["by_request_hash"].values()) == 1
    assert secret not in p.stdout + p.stderr + out.read_text(encoding="utf-8")
    assert "simulator" not in p.stderr  # a real provider was chosen: no sim note


def test_command_provider_runs_a_cli_per_prompt(tmp_path: Path) -> None:
    script = tmp_path / "answer.py"
    script.write_text(
        "import sys\nprompt = sys.stdin.read()\nprint('答:' + prompt[::-1])\n", encoding="utf-8"
    )
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "逆否命题"}])
    out = tmp_path / "out.jsonl"
    p = fanout(
        "batch",
        src,
        "-o",
        out,
        "--provider",
        "command",
        "--command",
        f"{sys.executable} {script}",
    )
    assert p.returncode == 0, p.stderr
    body = read_jsonl(out)[0]["response"]["body"]
    assert body["choices"][0]["message"]["content"] == "答:题命否逆"


def test_failing_command_reports_stderr_tail(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    out = tmp_path / "out.jsonl"
    cmd = f"{sys.executable} -c \"import sys; sys.stderr.write('quota exhausted'); sys.exit(3)\""
    p = fanout(
        "batch", src, "-o", out, "--provider", "command", "--command", cmd, "--attempts", "1"
    )
    assert p.returncode == 1
    err = read_jsonl(out)[0]["error"]
    assert "exited with 3" in err["message"]
    assert "quota exhausted" in err["message"]


def test_config_file_names_the_provider_and_lanes(sim_server: str, tmp_path: Path) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text(
        "default_provider: local\n"
        "concurrency: 4\n"
        "providers:\n"
        f"  local: {{type: openai, base_url: {sim_server}/v1, model: sim-1}}\n"
        "lanes: {io_intensive: 2}\n",
        encoding="utf-8",
    )
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": f"q{i}", "prompt": f"p{i}", "lane": "io_intensive"} for i in range(10)],
    )
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--config", cfg, "--json", "--attempts", "8")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1])["done"] == 10


def test_bad_config_is_one_message_naming_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text("lanes: {io_intensive: -1}\n", encoding="utf-8")
    src = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    p = fanout("batch", src, "-o", tmp_path / "o.jsonl", "--config", cfg)
    assert p.returncode == 2
    assert str(cfg) in p.stderr
    assert "lanes.io_intensive" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_agent_lines_render_blueprints(tmp_path: Path) -> None:
    inputs = {
        "question": "什么是逆否命题？",
        "learner_text": "条件结论都否定再交换。",
        "topic": "离散数学",
    }
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "score", "agent": "scoring-agent", "inputs": inputs},
            {"id": "bad", "agent": "no-such-agent", "inputs": inputs},
            {"id": "missing", "agent": "scoring-agent", "inputs": {"question": "q"}},
        ],
    )
    out = tmp_path / "out.jsonl"
    p = fanout("batch", src, "-o", out, "--sim-latency", "1ms")
    assert p.returncode == 1
    rows = {r["custom_id"]: r for r in read_jsonl(out)}
    content = rows["score"]["response"]["body"]["choices"][0]["message"]["content"]
    assert 0 <= json.loads(content)["total"] <= 100
    assert "unknown agent 'no-such-agent'" in rows["bad"]["error"]["message"]
    assert "learner_text" in rows["missing"]["error"]["message"]


def test_agents_list_and_show(tmp_path: Path) -> None:
    p = fanout("agents", "list")
    assert p.returncode == 0
    for name in ("scoring-agent", "oral-explanation", "memory-anchor", "comparison-table"):
        assert name in p.stdout
    p = fanout("agents", "show", "oral-explanation")
    assert p.returncode == 0
    assert "{question}" in p.stdout
    p = fanout("agents", "show", "nope")
    assert p.returncode == 2
    assert "unknown agent 'nope'" in p.stderr


def test_project_blueprint_overrides_a_builtin(tmp_path: Path) -> None:
    agents = tmp_path / ".fanout" / "agents"
    agents.mkdir(parents=True)
    (agents / "memory-anchor.md").write_text(
        "---\ndescription: 我的记忆锚点\ninputs: [question]\n---\n给出一个比喻：{question}\n",
        encoding="utf-8",
    )
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    p = subprocess.run(
        [sys.executable, "-m", "fanout", "agents", "show", "memory-anchor"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=e,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    assert "我的记忆锚点" in p.stdout
    assert "overrides" in p.stdout
