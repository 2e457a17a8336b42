"""A provider outage in the middle of a `fanout batch` run, as a user meets it (issue 10).

A sim-server process answers `--latency`; `fanout batch` (`--provider openai --base-url
... --concurrency N --json`, the default retry policy) runs `--lines` prompts against it.
`--at` seconds after the first answer the server is killed with SIGKILL and, `--down`
seconds later, started again on the same port (its counts kept in a `--stats-file`). One
clean run (no outage) comes first, so each outage is set against the normal wall time of
the same file on the same machine a minute earlier.

Figures per run (the last line printed is one JSON object with all of them):

- `wall_s`: the run's wall time (its `--json` summary: the process's start-up, seconds on
  a loaded machine, is left out; `process_s` has it); `extra_s` = wall - clean wall -
  outage: what the outage cost beyond its own length (the circuit's probes are capped at
  `CIRCUIT_PROBE_CAP_S` with full jitter, so up to that after a long outage);
- `done`, `failed`, `retries` (and `retries_by_kind`): from the batch's `--json` summary.
  The requests sent while the server was down are bounded in `tests/e2e/test_outage.py`
  (calls in flight + the failures that open the circuit + its probes).

    .venv/bin/python bench/outage.py --lines 2000 --concurrency 32 --latency 0.3 \\
        --at 5 --down 2 30 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

KEY = "sk-bench-outage"
MODEL = "sim-1"


class Server:
    """`python -m fanout.sim_server`, restartable on the same port."""

    def __init__(self, tmp: Path, latency: float) -> None:
        self.args = ["--host", "127.0.0.1", "--latency", f"{latency * 1000:g}ms"]
        self.args += ["--stats-file", str(tmp / "stats.json")]
        self.log = tmp / "server.log"
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "fanout.sim_server", "--port", str(self.port), *self.args]
        with self.log.open("a") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"sim-server listening on (http://127\.0\.0\.1:(\d+))\n", line)
        if not m:
            self.proc.kill()
            raise RuntimeError(f"sim-server did not start: {line!r} {self.log.read_text()}")
        self.url, self.port = m[1], int(m[2])

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()

    def completed(self) -> int:
        try:
            with urllib.request.urlopen(self.url + "/stats", timeout=10) as r:
                return int(json.loads(r.read())["completed_total"])
        except OSError:
            return 0


def one_run(
    tmp: Path, *, lines: int, concurrency: int, latency: float, at: float, down: float
) -> dict[str, Any]:
    """One `fanout batch` run; `down` 0: no outage. Returns its figures."""
    tmp.mkdir(parents=True)
    src = tmp / "输入.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": f"t{i}", "prompt": f"第 {i} 行: say one thing."}) + "\n")
    server = Server(tmp, latency)
    server.start()
    env = dict(os.environ, FANOUT_HOME=str(tmp / "home"), OPENAI_API_KEY=KEY)
    env.pop("FANOUT_CONFIG", None)
    cmd = [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(tmp / "out.jsonl")]
    cmd += ["--provider", "openai", "--base-url", server.url + "/v1", "--model", MODEL]
    cmd += ["--concurrency", str(concurrency), "--json", "--no-progress"]
    t0 = time.monotonic()
    batch = subprocess.Popen(
        cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    killed = back = None
    try:
        if down > 0:
            while server.completed() == 0 and batch.poll() is None:
                time.sleep(0.1)
            first = time.monotonic()
            while time.monotonic() - first < at and batch.poll() is None:
                time.sleep(0.05)
            server.kill()
            killed = time.monotonic()
            while time.monotonic() - killed < down and batch.poll() is None:
                time.sleep(0.05)
            server.start()
            back = time.monotonic()
        out, err = batch.communicate()
        wall = time.monotonic() - t0
    finally:
        if batch.poll() is None:
            batch.kill()
            batch.wait()
        server.stop()
    try:
        summary = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"fanout batch said: {out!r} {err[-2000:]!r}") from None
    figures: dict[str, Any] = {
        "down_s": down,
        "wall_s": summary.get("wall_s"),  # the run's own, without the process's start-up
        "process_s": round(wall, 2),
        "done": summary.get("done"),
        "failed": summary.get("failed"),
        "retries": summary.get("retries"),
        "retries_by_kind": summary.get("retries_by_kind"),
        "status": summary.get("status"),
    }
    if killed is not None and back is not None:
        figures["killed_at_s"] = round(killed - t0, 2)
        figures["down_for_s"] = round(back - killed, 2)
    return figures


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lines", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--latency", type=float, default=0.3)
    p.add_argument("--at", type=float, default=5.0, help="seconds after the first answer")
    p.add_argument("--down", type=float, nargs="+", default=[2.0, 30.0])
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="fanout-outage-"))
    runs: list[dict[str, Any]] = []
    try:
        kw = {"lines": a.lines, "concurrency": a.concurrency, "latency": a.latency, "at": a.at}
        clean = one_run(tmp / "clean", down=0.0, **kw)
        print(json.dumps(clean), file=sys.stderr)
        runs.append(clean)
        for i, down in enumerate(a.down):
            r = one_run(tmp / f"down-{i}", down=down, **kw)
            r["extra_s"] = round(r["wall_s"] - clean["wall_s"] - r.get("down_for_s", down), 2)
            print(json.dumps(r), file=sys.stderr)
            runs.append(r)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({"load_1min": round(os.getloadavg()[0], 1), "runs": runs}))


if __name__ == "__main__":
    main()
