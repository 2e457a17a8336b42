"""`--help` reads as prose at 80 and 120 columns: no sentence broken by the source's line
ends, no cut example or command summary, no `<bool>` on switches (issue 11 #14)."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import pytest

from tests.e2e.test_cli_batch import ROOT

COMMANDS = [
    (),
    ("batch",),
    ("resume",),
    ("runs",),
    ("status",),
    ("report",),
    ("cancel",),
    ("results",),
    ("cache",),
    ("cache", "clear"),
    ("cache", "stats"),
    ("canvas",),
    ("canvas", "plan"),
    ("canvas", "run"),
    ("canvas", "restore"),
    ("agents",),
    ("agents", "list"),
    ("agents", "show"),
]


def help_text(columns: int) -> dict[tuple[str, ...], str]:
    """Every command's help, from one process (each `fanout` start costs a second)."""
    script = (
        "import sys\n"
        "from fanout.cli.app import app\n"
        f"for cmd in {COMMANDS!r}:\n"
        "    print('=== ' + ' '.join(cmd), flush=True)\n"
        "    try:\n"
        "        app([*cmd, '--help'], prog_name='fanout')\n"
        "    except SystemExit as e:\n"
        "        assert e.code in (0, None), (cmd, e.code)\n"
    )
    env = {**os.environ, "COLUMNS": str(columns)}
    p = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    out: dict[tuple[str, ...], str] = {}
    for chunk in p.stdout.split("=== ")[1:]:
        head, _, body = chunk.partition("\n")
        out[tuple(head.split())] = body
    assert set(out) == set(COMMANDS)
    return out


@pytest.mark.parametrize("columns", [80, 120])
def test_help_fits_the_terminal_and_cuts_nothing(columns: int) -> None:
    for cmd, text in help_text(columns).items():
        lines = text.splitlines()
        assert lines[0].startswith("Usage: fanout"), (cmd, lines[0])
        for line in lines:
            assert len(line) <= columns, (cmd, line)
            assert "<bool>" not in line, (cmd, line)
            assert "…" not in line, (cmd, line)
            assert not (line.endswith("...") and not line.startswith("Usage:")), (cmd, line)
        assert '"6"...' not in text
        assert "╭" not in text  # no boxes to break when copied
        # the description is rewrapped: no line ends where the docstring's source line did,
        # so a line followed by more of its paragraph is full (its next word did not fit)
        end = next(i for i, x in enumerate(lines) if x.endswith(":") and not x.startswith(" "))
        about = [x.strip() for x in lines[1:end]]
        for a, b in itertools.pairwise(about):
            if a and b:
                assert len(a) + 1 + len(b.split()[0]) > min(columns, 120) - 6, (cmd, a, b)


def test_examples_in_the_help_are_whole_at_80_columns() -> None:
    text = help_text(80)
    batch = " ".join(text[("batch",)].split())
    assert "base=50ms,per_token=1ms,jitter=0.2" in batch
    assert "429=0.05,500=0.02,timeout=0.01" in batch
    assert "10MB, 500kB" in batch
    root = text[()]
    for name in ("batch", "resume", "cache", "canvas", "agents", "sim-server"):
        assert any(line.strip().startswith(name + " ") for line in root.splitlines()), name
