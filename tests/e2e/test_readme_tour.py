"""The README's tour, as a newcomer runs it: in a copy of the repository, after what `make
demo` runs (its `fanout` lines, read from the Makefile), each `$ .venv/bin/fanout ...`
command of "A 30-second tour" and its Python example run top to bottom, and their output
has the shape the README shows: the same lines in the same order, numbers aside ("..."
stands for lines left out). When this fails, the README (or the demo) says something that
is not so."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_cli_batch import ROOT

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else None]


def blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block."""
    return [(m[1], m[2]) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def sessions(text: str) -> list[tuple[str, list[str]]]:
    """(command, the lines shown after it) of every `$ ` prompt in the text's blocks."""
    out: list[tuple[str, list[str]]] = []
    for _, body in blocks(text):
        current: list[str] | None = None  # a block's lines before any prompt are not output
        for line in body.splitlines():
            if line.startswith("$ "):
                current = []
                out.append((line[2:], current))
            elif current is not None:
                current.append(line)
    return out


_NUMBER = re.compile(r"\$?\d[\d,]*(\.\d+)?( ?(ms|s|x|%))?")


def shape(line: str) -> str:
    """A line with its numbers (and their units) as N, or 0 for a zero (a speedup of 0.00x
    where the README shows 12.21x is not the same thing), spaces collapsed."""

    def number(m: re.Match[str]) -> str:
        digits = re.sub(r"[^\d.]", "", m[0].split()[0])
        return "0" if float(digits.rstrip(".") or 0) == 0 else "N"

    return " ".join(_NUMBER.sub(number, line).split())


def assert_shape(command: str, shown: list[str], stdout: str, stderr: str) -> None:
    """Every line the README shows is there, in order within its stream; a line of
    counts by kind (`retries 13 (rate_limited 5, ...)`) only needs its kinds among those
    that can occur, since which faults a run draws is the simulator's to say."""
    streams = {"out": [shape(x) for x in stdout.splitlines()], "err": []}
    streams["err"] = [shape(x) for x in stderr.splitlines()]
    pos = {"out": 0, "err": 0}
    for want in (shape(x) for x in shown if x.strip() and x.strip() != "..."):
        name = "err" if want.startswith(("fanout:", "run r-")) else "out"
        lines = streams[name]
        label = re.match(r"(retries|failures) N \(", want)  # the kinds: the draws decide
        for i in range(pos[name], len(lines)):
            got = lines[i]
            if got == want or (label and got.startswith(label[0])):
                pos[name] = i + 1
                break
        else:
            pytest.fail(
                f"$ {command}\nthe README shows {want!r}; the run printed:\n{stdout}{stderr}"
            )


@pytest.fixture(scope="module")
def tour_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A copy of the repository after the demo's `fanout` commands, and the environment."""
    root = tmp_path_factory.mktemp("tour") / "fanout"
    files = subprocess.run(
        ["git", "ls-files", "-z"], capture_output=True, cwd=ROOT, check=True
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / os.fsdecode(name)
        if src.is_file():
            dst = root / os.fsdecode(name)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(root.parent / "home")
    env.pop("FANOUT_CONFIG", None)
    recipe = re.search(r"^demo:.*?\n((?:\t.*\n)+)", (root / "Makefile").read_text(), re.M)
    assert recipe is not None
    ran = 0
    for line in recipe[1].splitlines():
        line = line.strip().lstrip("@")
        if line.startswith("rm -rf scratch/vault"):
            (root / "scratch").mkdir()
            shutil.copytree(root / "examples" / "vault", root / "scratch" / "vault")
        elif line.startswith("$(BIN)/fanout "):
            args = shlex.split(line.removeprefix("$(BIN)/fanout "))
            p = run([sys.executable, "-m", "fanout", *args], root, env)
            assert p.returncode == 0, f"make demo: {line}\n{p.stderr}"
            ran += 1
    assert ran >= 3  # the demo's canvas runs and its batch
    return root, env


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def test_the_tour_commands_print_what_the_readme_shows(
    tour_copy: tuple[Path, dict[str, str]],
) -> None:
    root, env = tour_copy
    tour = section(README.read_text(encoding="utf-8"), "A 30-second tour")
    shown = sessions(tour)
    assert len(shown) >= 2  # the first batch and the fault demo
    for command, lines in shown:
        argv = shlex.split(command)
        assert argv[0] == ".venv/bin/fanout", command
        p = run([sys.executable, "-m", "fanout", *argv[1:]], root, env)
        assert p.returncode in (0, 1), f"$ {command}\n{p.stderr}"
        assert "Traceback" not in p.stderr
        assert_shape(command, lines, p.stdout, p.stderr)
    # the first command is the demo's batch again: real (simulated) calls, not the cache
    first = run([sys.executable, "-m", "fanout", *shlex.split(shown[0][0])[1:]], root, env)
    assert "from the cache" in first.stdout  # a second run of it is answered from the cache


def test_the_python_example_prints_what_the_readme_shows(
    tour_copy: tuple[Path, dict[str, str]],
) -> None:
    root, env = tour_copy
    tour = section(README.read_text(encoding="utf-8"), "A 30-second tour")
    found = blocks(tour)
    i = next(i for i, (lang, _) in enumerate(found) if lang == "python")
    code, (_, output) = found[i][1], found[i + 1]
    p = run([sys.executable, "-c", code], root, env)
    assert p.returncode == 0, p.stderr
    got, want = p.stdout.splitlines(), output.strip().splitlines()
    assert len(got) == len(want)
    assert got[0].endswith(" ...")
    assert re.search(r"[\u4e00-\u9fff]", got[0])  # the simulator answers Chinese in Chinese
    keys = re.compile(r"'(\w+)':")
    assert keys.findall(got[1]) == keys.findall(want[1])
    assert got[1].startswith("{'done': 6,")
