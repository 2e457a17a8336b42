"""What a `fanout` command loads before it does anything: only what that command uses.

Every command pays its imports, and the suite starts hundreds of `fanout` processes: the
whole library at start-up cost about 0.9 s of CPU a command, `--help` now about 0.2 s
(docs/benchmarks.md §17). Each case runs one command in a fresh interpreter and lists the
modules it ended with, so a module-level import that drags the engine (or an SDK) back into
every command fails here, naming the module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

#: what no command here may load unless it uses it
NEVER_FOR_HELP = (
    "fanout.engine",
    "fanout.launch",
    "fanout.batch",
    "fanout.canvas",
    "fanout.config",
    "fanout.store",
    "fanout.providers",
    "fanout.executor",
    "fanout.service",
    "asyncio",
    "rich",
    "yaml",
    "openai",
    "anthropic",
    "httpx",
    "fastapi",
    "ray",
)
#: a batch on the simulator without a terminal: no canvas, no live display, no SDK, no HTTP
NEVER_FOR_SIM_BATCH = (
    "fanout.canvas",
    "fanout.executor",
    "fanout.service",
    "fanout.cli.progress",
    "rich",
    "openai",
    "anthropic",
    "httpx",
    "fastapi",
    "ray",
)

SCRIPT = """
import json, sys
sys.argv = ["fanout", *json.loads(sys.argv[1])]
from fanout.cli.app import main
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def loaded(args: list[str], cwd: Path) -> tuple[object, set[str]]:
    env = {**os.environ, "FANOUT_HOME": str(cwd / "家")}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    last = json.loads(proc.stdout.strip().splitlines()[-1])
    return last["code"], set(last["modules"])


def offending(modules: set[str], never: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in never))


def test_help_loads_no_command_behind_it(tmp_path: Path) -> None:
    code, modules = loaded(["--help"], tmp_path)
    assert code == 0
    assert "typer" in modules  # (the script did run the command line)
    assert offending(modules, NEVER_FOR_HELP) == []


def test_a_batch_on_the_simulator_loads_neither_canvas_nor_sdks_nor_rich(tmp_path: Path) -> None:
    src = tmp_path / "一行.jsonl"
    src.write_text(json.dumps({"id": "一", "prompt": "你好"}, ensure_ascii=False) + "\n")
    out = tmp_path / "结果.jsonl"
    code, modules = loaded(["batch", str(src), "-o", str(out), "--no-progress"], tmp_path)
    assert code == 0
    assert "fanout.batch.run" in modules  # (it ran)
    assert json.loads(out.read_text(encoding="utf-8"))["custom_id"] == "一"
    assert offending(modules, NEVER_FOR_SIM_BATCH) == []
