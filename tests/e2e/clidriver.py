"""Run many `fanout` command lines, each in its own process, cheaply: this script imports
the CLI once, then forks one child per command line (the child is the `fanout` a user
runs, minus the seconds of imports), with its stdout and stderr in files and a time limit.

    python tests/e2e/clidriver.py CASES.json RESULTS.json

CASES.json: [{"argv": [...], "cwd": "...", "env": {...}, "timeout": 30}, ...]; RESULTS.json
gets, per case, {"rc": int | None (None: it hung and was killed), "seconds", "stdout",
"stderr"}.
CLIDRIVER_JOBS children run at once (default 4).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import signal
import sys
import time
import traceback
from pathlib import Path


def start_case(argv: list[str], cwd: str, env: dict[str, str], out: Path, err: Path) -> int:
    """Fork the child that runs `fanout ARGV`; returns its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        os.chdir(cwd)
        os.environ.update(env)
        fd_out = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        fd_err = os.open(err, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd_out, 1)
        os.dup2(fd_err, 2)
        fd_in = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd_in, 0)
        sys.argv = ["fanout", *argv]
        from fanout.cli.app import main

        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()  # what a user would see: the test looks for it
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # the child is exiting either way
                stream.flush()
        os._exit(code)


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    work = Path(sys.argv[2]).parent
    # every fanout module imported once, before the forks (the CLI imports most lazily)
    import fanout

    for mod in pkgutil.walk_packages(fanout.__path__, "fanout."):
        if mod.name != "fanout.__main__":
            importlib.import_module(mod.name)

    jobs = int(os.environ.get("CLIDRIVER_JOBS", "4"))  # the children mostly wait
    rcs: dict[int, int | None] = {}
    took: dict[int, float] = {}
    running: dict[int, tuple[int, float]] = {}  # pid -> (case, deadline)
    todo = list(enumerate(cases))
    while todo or running:
        while todo and len(running) < jobs:
            i, case = todo.pop(0)
            out, err = work / f"case{i}.out", work / f"case{i}.err"
            pid = start_case(case["argv"], case["cwd"], case.get("env", {}), out, err)
            took[i] = time.monotonic()
            running[pid] = (i, took[i] + float(case.get("timeout", 30)))
        for pid, (i, deadline) in list(running.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                rcs[i] = os.waitstatus_to_exitcode(status)
            elif time.monotonic() > deadline:  # it hangs: kill it, say so
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                rcs[i] = None
            else:
                continue
            took[i] = time.monotonic() - took[i]
            del running[pid]
        time.sleep(0.005)
    results = []
    for i in range(len(cases)):
        out, err = work / f"case{i}.out", work / f"case{i}.err"
        results.append(
            {
                "rc": rcs[i],
                "seconds": round(took[i], 3),
                "stdout": out.read_text(encoding="utf-8", errors="replace"),
                "stderr": err.read_text(encoding="utf-8", errors="replace"),
            }
        )
    Path(sys.argv[2]).write_text(json.dumps(results, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
