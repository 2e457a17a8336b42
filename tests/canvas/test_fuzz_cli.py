"""Fuzzing `fanout canvas` with generated canvases (issue 11): whatever the file holds, the
CLI ends with exit 0, 1 or 2, prints no traceback, does not hang, and leaves the canvas as
it was when it refuses it (exit 2) — and `plan` never changes it at all.

A few hundred `canvas plan` cases run in one subprocess (a driver calling the CLI's entry
point per case, with an alarm per case: starting Python for each would take minutes on a
loaded machine); a sample of them, and a few `canvas run`s with the simulator, run as the
real `python -m fanout` command.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fanout.canvas import parse_canvas
from fanout.errors import InputError

from .canvas_text import Style, emit, insertions
from .support import assert_kept
from .test_input_refusals import ROOT, fanout

SEED = 20261130
CASES = 300
SOURCES = [
    *sorted((ROOT / "examples" / "vault").glob("*.canvas")),
    *sorted((ROOT / "tests" / "canvas" / "fixtures" / "original-system").glob("*.canvas"))[:6],
]
TOKENS = [
    "{", "}", "[", "]", '"', ",", ":", "\\", "1e400", "-0", "NaN", "Infinity", "\\ud800",
    "\\u0000", "\u2028", "\x00", "null", "true", "1" * 30, '"color":"3"', '"x":"100"', "\ufeff",
]  # fmt: skip
WEIRD: list[Any] = [
    None, True, False, 0, -0.0, 1.5e308, -1e-320, 10**40, "", "100", "3", "#FFF", [], {},
    [1, [2, [3]]], {"嵌套": {"值": [None]}}, "\ud800", "单" * 5000, "[请在此填写你的理解]",
    "__DEEP__", "__INF__",
]  # fmt: skip
FIELDS = ["id", "type", "x", "y", "width", "height", "color", "text", "file", "url", "label"]

DRIVER = r"""
import functools, io, json, signal, sys, traceback
import fanout.launch
from fanout.cli import main

# the agents' blueprints are the same for every case and take most of a plan's time to load
# (`canvas plan` imports `load_agents` from fanout.launch when it runs: it finds this one)
fanout.launch.load_agents = functools.cache(fanout.launch.load_agents)

class Hang(Exception):
    pass

def alarm(signum, frame):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
for path in sys.argv[1:]:
    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    sys.argv = ["fanout", "canvas", "plan", path]
    code, crash = 0, ""
    signal.alarm(20)
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Hang:
        code, crash = -1, "hang"
    except BaseException:
        code, crash = -2, traceback.format_exc()
    finally:
        signal.alarm(0)
        sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    print(json.dumps({"path": path, "code": code, "crash": crash, "err": err.getvalue()}))
"""


def _deep(rng: random.Random) -> str:
    depth = rng.choice([5, 50, 99, 150, 500, 990, 1200, 3000])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return opener * depth + ("1" if opener != "[" else "") + closer * depth


def _mutate_structure(data: Any, rng: random.Random) -> Any:
    nodes = data.get("nodes") if isinstance(data, dict) else None
    for _ in range(rng.randint(1, 4)):
        move = rng.randrange(8)
        if move <= 3 and isinstance(nodes, list) and nodes:
            node = rng.choice(nodes)
            if isinstance(node, dict):
                node[rng.choice(FIELDS)] = rng.choice(WEIRD)
        elif move == 4 and isinstance(nodes, list) and nodes:
            nodes.append(json.loads(json.dumps(rng.choice(nodes))))  # a duplicate id
        elif move == 5 and isinstance(data, dict):
            data[rng.choice(["nodes", "edges", "未知"])] = rng.choice(WEIRD)
        elif move == 6 and isinstance(data, dict):
            edges = data.setdefault("edges", [])
            if isinstance(edges, list):
                edges.append({"id": f"e{rng.random()}", "fromNode": "不存在", "toNode": "?"})
        else:
            data = rng.choice([data, [data], "画布", 3])
    return data


def _mutate_bytes(raw: bytes, rng: random.Random) -> bytes:
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(data) + 1)
        move = rng.randrange(4)
        if move == 0:
            data[at:at] = rng.choice(TOKENS).encode("utf-8", "surrogatepass")
        elif move == 1 and data:
            del data[at : at + rng.randint(1, 40)]
        elif move == 2 and data:
            data[at : at + 1] = bytes([rng.choice([rng.randrange(128), rng.randrange(256)])])
        else:
            data = data[:at]
    return bytes(data)


def generate(folder: Path, rng: random.Random) -> list[Path]:
    """`CASES` canvases: structural mutations written in some real layout, byte mutations."""
    bases = [json.loads(p.read_text("utf-8")) for p in SOURCES]
    styles = [
        Style("obsidian"),
        Style("obsidian", crlf=True, bom=True),
        Style("pretty", unit="  "),
        Style("pretty", unit="\t", ascii=True),
        Style("minified", trailing_newline=False),
    ]
    paths = []
    for n in range(CASES):
        data = json.loads(json.dumps(rng.choice(bases)))
        if rng.random() < 0.6:
            data = _mutate_structure(data, rng)
        if isinstance(data, dict):
            raw = emit(data, rng.choice(styles), lambda options: rng.choice(options))
        else:
            raw = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
        raw = raw.replace(b'"__DEEP__"', _deep(rng).encode()).replace(b'"__INF__"', b"-1e400")
        if rng.random() < 0.35:
            raw = _mutate_bytes(raw, rng)
        path = folder / f"白板 {n:03d}.canvas"
        path.write_bytes(raw)
        paths.append(path)
    return paths


# about 30 s on an idle machine; several times that while eight test suites share two cores
@pytest.mark.timeout(400)
def test_canvas_plan_never_crashes_hangs_or_writes(tmp_path: Path) -> None:
    vault = tmp_path / "模糊 测试"
    (vault / ".obsidian").mkdir(parents=True)
    paths = generate(vault, random.Random(SEED))
    before = {p: p.read_bytes() for p in paths}
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(results) == len(paths)
    codes: dict[int, int] = {}
    for r in results:
        codes[r["code"]] = codes.get(r["code"], 0) + 1
        where = f"{Path(r['path']).name}: {r['crash'] or r['err']}"
        assert r["code"] in (0, 1, 2), where
        assert "Traceback" not in r["err"], where
        if r["code"] == 2:
            assert len(r["err"].strip().splitlines()) == 1, where  # one line
    for path, raw in before.items():
        assert path.read_bytes() == raw, f"plan changed {path.name}"
    assert sorted(vault.iterdir()) == sorted([*paths, vault / ".obsidian"])
    print(f"exit codes over {CASES} generated canvases: {codes}")
    assert codes.get(0, 0) >= CASES // 5, codes  # both kinds, in numbers
    assert codes.get(2, 0) >= CASES // 5, codes


@pytest.mark.timeout(400)
def test_canvas_run_and_plan_as_commands_on_a_sample(tmp_path: Path) -> None:
    vault = tmp_path / "模糊 测试"
    (vault / ".obsidian").mkdir(parents=True)
    rng = random.Random(SEED + 1)
    paths = generate(vault, rng)
    home = tmp_path / "home"
    for path in rng.sample(paths, 5):
        raw = path.read_bytes()
        p = fanout("canvas", "plan", path, home=home)
        assert p.returncode in (0, 2), p.stderr
        assert "Traceback" not in p.stderr
        assert path.read_bytes() == raw
    ran = 0
    for path in rng.sample(paths, len(paths)):
        if ran == 3:
            break
        raw = path.read_bytes()
        try:
            original = parse_canvas(raw)
        except InputError:  # a refused file: run must refuse it too
            original = None
        if ran == 0 and original is not None:
            continue  # the first run: a file that is refused
        run_vault = tmp_path / f"运行 {ran}"
        (run_vault / ".obsidian").mkdir(parents=True)
        target = run_vault / path.name
        shutil.copy(path, target)
        p = fanout(
            "canvas", "run", target, "--agents", "oral-explanation", "--sim-latency", "1ms",
            "--no-progress", home=home,
        )  # fmt: skip
        ran += 1
        assert p.returncode in (0, 1, 2), p.stderr
        assert "Traceback" not in p.stderr
        if p.returncode == 2:
            assert target.read_bytes() == raw
            assert sorted(run_vault.iterdir()) == sorted([target, run_vault / ".obsidian"])
        elif original is not None:
            after = target.read_bytes()
            assert (
                insertions(
                    raw.decode().removeprefix("\ufeff"), after.decode().removeprefix("\ufeff")
                )
                is not None
            )
            assert_kept(json.loads(raw.decode().removeprefix("\ufeff")),
                        json.loads(after.decode().removeprefix("\ufeff")))  # fmt: skip
    assert ran == 3
