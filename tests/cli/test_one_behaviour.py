"""`fanout batch` and `fanout canvas run` behave as one command: the same bad input exits 2
with one line and runs and writes nothing; they take the same engine flags; `canvas plan`
needs no key."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fanout.store.overview import list_runs
from fanout.store.sqlite import opened
from tests.e2e.test_cli_batch import ROOT, fanout, write_jsonl

pytestmark = pytest.mark.e2e

ENGINE_FLAGS = (
    "--provider",
    "--model",
    "--base-url",
    "--command",
    "--concurrency",
    "--rpm",
    "--tpm",
    "--timeout",
    "--attempts",
    "--deadline",
    "--grace",
    "--cache-ttl",
    "--cache",
    "--no-cache",
    "--sim-latency",
    "--sim-faults",
    "--seed",
    "--json",
    "--config",
)
TWO_PROVIDERS = """\
providers:
  sim: {}
  other: {type: sim}
default_provider: sim
agents:
  memory-anchor: {provider: other}
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


#: name -> (flags made in a temp dir, what the one line says)
BAD: dict[str, tuple[Callable[[Path], tuple[str, ...]], str]] = {
    "unparsable config": (
        lambda d: ("--config", str(_write(d / "bad.yaml", "concurrency: [1\n"))),
        "bad.yaml",
    ),
    "missing config": (lambda d: ("--config", str(d / "none.yaml")), "no such config file"),
    "wrong config key": (
        lambda d: ("--config", str(_write(d / "keys.yaml", "concurency: 3\n"))),
        "concurency",
    ),
    "unknown provider": (lambda d: ("--provider", "nosuch"), "not configured; use one of"),
    "openai without a key": (lambda d: ("--provider", "openai"), "OPENAI_API_KEY"),
    "bad sim faults": (lambda d: ("--sim-faults", "418=0.5"), "418"),
    "bad sim latency": (lambda d: ("--sim-latency", "fast"), "fast"),
    "bad cache ttl": (lambda d: ("--cache-ttl", "soon"), "--cache-ttl"),
    "zero deadline": (lambda d: ("--deadline", "0"), "--deadline"),
    "zero rpm": (lambda d: ("--rpm", "0"), "--rpm"),
    # canvas run exited 1 here: the engine refuses the plan only once the run starts
    "agent on a provider not built": (
        lambda d: ("--config", str(_write(d / "two.yaml", TWO_PROVIDERS))),
        "asks for provider 'other'",
    ),
}


def _env(tmp: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp / "home")}


def _files(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _runs(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    monkeypatch.setenv("FANOUT_HOME", str(tmp / "home"))
    if not (tmp / "home").exists():
        return []
    with opened() as db:
        return list(list_runs(db))


def _one_line(p: subprocess.CompletedProcess[str], message: str) -> None:
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("fanout: ")
    assert message in lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_the_same_bad_input_exits_2_with_one_line_in_batch_and_canvas_run(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags, message = BAD[case]
    args = flags(tmp_path)
    src = write_jsonl(
        tmp_path / "in.jsonl",
        [{"id": "a", "agent": "memory-anchor", "inputs": {"question": "q", "topic": "t"}}],
    )
    out = tmp_path / "out.jsonl"
    _one_line(fanout("batch", src, "-o", out, "--no-progress", *args, env=_env(tmp_path)), message)
    assert not out.exists()

    vault = tmp_path / "vault"
    shutil.copytree(ROOT / "examples" / "vault", vault)
    before = _files(vault)
    p = fanout(
        "canvas",
        "run",
        vault / "离散数学.canvas",
        "--agents",
        "memory-anchor",
        "--no-progress",
        *args,
        env=_env(tmp_path),
    )
    _one_line(p, message)
    assert _files(vault) == before
    assert _runs(tmp_path, monkeypatch) == []  # nothing was run


def test_a_missing_input_file_exits_2_with_one_line_in_both(tmp_path: Path) -> None:
    p = fanout("batch", tmp_path / "无.jsonl", "-o", tmp_path / "o.jsonl", env=_env(tmp_path))
    _one_line(p, "no such file")
    p = fanout("canvas", "run", tmp_path / "无.canvas", "--agents", "memory-anchor")
    _one_line(p, "无.canvas")
    assert sorted(x.name for x in tmp_path.iterdir()) == []


def _help(*args: str) -> str:
    env = {**os.environ, "COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}
    p = subprocess.run(
        [sys.executable, "-m", "fanout", *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    return p.stdout


def _flags(text: str) -> set[str]:
    return set(re.findall(r"(--[a-z][a-z-]*)", text))


def test_canvas_run_takes_every_engine_flag_batch_takes() -> None:
    canvas_flags = _flags(_help("canvas", "run"))
    batch_flags = _flags(_help("batch"))
    for flag in ENGINE_FLAGS:
        assert flag in canvas_flags, flag
        assert flag in batch_flags, flag
    # and resume can change each of them
    resume_flags = _flags(_help("resume"))
    assert set(ENGINE_FLAGS) <= resume_flags
    assert "--reconfigure" in resume_flags


def test_canvas_plan_reads_blueprints_without_a_key(tmp_path: Path) -> None:
    cfg = _write(
        tmp_path / "fanout.yaml",
        "default_provider: openai\n"
        "providers:\n"
        "  openai: {model: gpt-4o-mini, api_key_env: OPENAI_API_KEY}\n"
        "agents:\n"
        "  memory-anchor: {lane: lightweight}\n",
    )
    path = ROOT / "examples" / "vault" / "离散数学.canvas"
    before = path.read_bytes()
    p = fanout(
        "canvas", "plan", path, "--agents", "memory-anchor", "--config", cfg, env=_env(tmp_path)
    )
    assert p.returncode == 0, p.stderr
    assert "OPENAI_API_KEY" not in p.stderr
    tasks = [x for x in p.stdout.splitlines() if x.strip().startswith("- ")]
    assert tasks
    assert all("/memory-anchor  [lightweight]" in x for x in tasks)  # the config's lane
    assert path.read_bytes() == before
    # running it does need the key: one line naming it, nothing run
    p = fanout(
        "canvas", "run", path, "--agents", "memory-anchor", "--config", cfg, env=_env(tmp_path)
    )
    _one_line(p, "OPENAI_API_KEY")
    assert path.read_bytes() == before


def test_version_and_short_help_everywhere_and_the_simulators_own_help() -> None:
    import subprocess
    import sys

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fanout", *args], capture_output=True, text=True, timeout=60
        )

    v = run("--version")
    assert v.returncode == 0
    assert v.stdout.startswith("fanout ")
    for args in (("-h",), ("batch", "-h"), ("canvas", "run", "-h"), ("resume", "--help")):
        p = run(*args)
        assert p.returncode == 0, (args, p.stderr)
        assert "Usage" in p.stdout
    for flag in ("-h", "--help"):  # the simulator's own help, with its own flags
        p = run("sim-server", flag)
        assert p.returncode == 0, p.stderr
        assert "--stats-file" in p.stdout
