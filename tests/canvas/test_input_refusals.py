"""Canvases that used to crash or hang `fanout canvas` (issue 11): each is refused with one
line naming the problem, exit 2, before any call is made; nothing is written, no folder left.

Run as a user runs them: `python -m fanout` in a subprocess, with a timeout for the hangs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from fanout.canvas import parse_canvas
from fanout.canvas.io import MAX_DEPTH
from fanout.errors import InputError

ROOT = Path(__file__).resolve().parents[2]
NODE = (
    '{"id":"问","type":"text","text":"什么是逆否命题？",'
    '"x":0,"y":0,"width":250,"height":60,"color":"3"'
)


def canvas_with(extra: str) -> str:
    return '{\n\t"nodes":[\n\t\t' + NODE + "," + extra + '}\n\t],\n\t"edges":[]\n}\n'


def fanout(*args: str | Path, home: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(home)
    return subprocess.run(
        [sys.executable, "-m", "fanout", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def _text(body: str) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        path.write_text(body, encoding="utf-8")
        return path

    return make


def _loop(path: Path) -> Path:
    other = path.with_name("另一个.canvas")
    path.symlink_to(other.name)
    other.symlink_to(path.name)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


CASES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "overflow": (_text(canvas_with('"x2":1e400')), "overflows to infinity"),
    "negative overflow": (_text(canvas_with('"权重":-2.5E+999')), "overflows to infinity"),
    "a huge integer": (_text(canvas_with('"n":' + "9" * 5000)), "more than 4,300 digits"),
    "nested 600 arrays": (_text(canvas_with('"深":' + "[" * 600 + "]" * 600)), "nested more"),
    "nested 980 objects": (
        _text(canvas_with('"深":' + '{"a":' * 980 + "1" + "}" * 980)),
        "nested more",
    ),
    "a symlink loop": (_loop, "a loop of symbolic links"),
    "a FIFO": (_fifo, "named pipe (FIFO), not a regular file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_canvas_run_refuses_before_any_call_and_writes_nothing(
    case: str, vault: Path, tmp_path: Path
) -> None:
    make, message = CASES[case]
    path = make(vault / "离散 数学.canvas")
    before = sorted(p.name for p in vault.rglob("*"))
    raw = path.read_bytes() if path.is_file() else None
    home = tmp_path / "home"
    p = fanout("canvas", "run", path, "--sim-latency", "1ms", "--no-progress", home=home)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr  # one line, no traceback
    assert message in lines[0]
    assert "离散 数学.canvas" in lines[0]  # it names the file
    assert sorted(p.name for p in vault.rglob("*")) == before  # no notes, no empty folder
    if raw is not None:
        assert path.read_bytes() == raw
    runs = fanout("runs", home=home)
    assert "canvas" not in runs.stdout  # refused before a run was started


def test_plan_of_a_fifo_does_not_wait_for_a_writer(vault: Path, tmp_path: Path) -> None:
    path = _fifo(vault / "管道.canvas")
    p = fanout("canvas", "plan", path, home=tmp_path / "home", timeout=30)
    assert p.returncode == 2
    assert "not a regular file" in p.stderr


@pytest.mark.parametrize("depth", [MAX_DEPTH - 3, MAX_DEPTH + 1, 500, 999, 5000])
def test_deep_values_are_read_up_to_the_limit_and_refused_past_it(depth: int) -> None:
    text = canvas_with('"深":' + "[" * depth + "]" * depth)
    if depth + 3 <= MAX_DEPTH:  # the document, `nodes`, the node: 3 levels above it
        assert parse_canvas(text).nodes[0].raw["深"] is not None
    else:
        with pytest.raises(InputError, match=f"more than {MAX_DEPTH} levels"):
            parse_canvas(text)


def test_a_number_that_fits_is_kept_as_spelled() -> None:
    text = canvas_with('"x2":1.7976931348623157e308,"y2":-0.0,"z":1E2')
    canvas = parse_canvas(text)
    assert canvas.nodes[0].raw["x2"] == 1.7976931348623157e308
    from fanout.canvas import dumps_canvas

    assert dumps_canvas(canvas) == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "this file holds an array"),
        ('{"nodes": {}}', "`nodes` must be an array, found an object"),
        ('{"edges": "边"}', "`edges` must be an array, found a string"),
        ('{"nodes": null}', "`nodes` must be an array, found null"),
    ],
)
def test_a_file_that_is_not_a_canvas_is_named_in_plain_words(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_canvas(text, path="白板.canvas")
