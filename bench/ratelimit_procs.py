"""Several `fanout batch` processes sharing one account's budget (issue 10).

A sim-server in its own process enforces `--rpm` (and `--tpm`, if given) per API key in the
shape `--shape`; `--procs` `fanout batch` processes run at once against it with the same
key, in one `FANOUT_HOME` (so they meet in its `accounts.db`), each with `--rpm`/`--tpm`
configured (`--configure`, the account's whole limit each) or nothing (the meter learns, or
reads the server's rate headers unless `--no-rate-headers`). The first processes get
`--together` seconds of work at their share, the last one `--alone` seconds more at the
whole limit, so it goes on alone after the others end.

Figures, from the server's own counts (`GET /stats`, polled every 0.25 s):

- `together`: answers per second while all run, as a share of the limit: from `--warmup`
  s after every process holds its lease on the account in `accounts.db` (after the first
  answer, if later) to the first end. (From the first answer, as it was, the window held a
  process that started seconds before the others on a loaded machine, paced alone at the
  whole limit, and ended before they began: a start-up race, not the sharing.) `overlap`:
  the most processes seen holding a lease at once (the window starts when it is reached,
  or `MIN_WINDOW_S` before the first end if that is earlier);
- `alone_after_s`: seconds from the last of the others' ends until the one left reaches
  95 % of the limit (over a 2 s window), and `alone`: its share of the limit from that end
  to its own (ramp included);
- `rejected_429_share`: 429s among all the requests the server received; `failed`: tasks
  failed, over all processes (their `--json` summaries).

    .venv/bin/python bench/ratelimit_procs.py --procs 2 --rpm 600 --configure

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KEY = "sk-bench-shared-account"
MODEL = "sim-1"
PROMPT = "Say one short sentence about limits, number {i}."
#: the least span `together` is measured over (the server's counts are polled every 0.25 s)
MIN_WINDOW_S = 4.0


@dataclass
class Figures:
    limit_per_s: float
    together: float = 0.0
    overlap: int = 0
    together_from_first: float = 0.0  # the window as it was: from the first answer
    alone_after_s: float | None = None
    alone: float = 0.0
    rejected_429_share: float = 0.0
    failed: int = 0
    done: int = 0
    most_attempts: int = 0  # the most attempts one task made (429s that cost none included)
    lines: int = 0  # input lines over all processes
    ends: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "limit_per_s": round(self.limit_per_s, 3),
            "together": round(self.together, 4),
            "overlap": self.overlap,
            "together_from_first": round(self.together_from_first, 4),
            "alone_after_s": None if self.alone_after_s is None else round(self.alone_after_s, 2),
            "alone": round(self.alone, 4),
            "rejected_429_share": round(self.rejected_429_share, 4),
            "failed": self.failed,
            "done": self.done,
            "most_attempts": self.most_attempts,
        }


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "fanout.sim_server", "--host", "127.0.0.1", "--port", "0"]
    with log.open("a") as err:
        proc = subprocess.Popen([*cmd, *args], stdout=subprocess.PIPE, stderr=err, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    m = re.fullmatch(r"sim-server listening on (http://\S+)\n", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"sim-server did not start: {line!r} {log.read_text()}")
    return proc, m[1]


def stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=10) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def write_lines(path: Path, n: int, tag: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"{tag}-{i}", "prompt": PROMPT.format(i=f"{tag}{i}")}))
            f.write("\n")


def run(
    *,
    procs: int,
    rpm: float,
    tpm: float | None = None,
    configure: bool = False,
    shape: str = "gcra",
    window: float = 60.0,
    latency: float = 0.2,
    concurrency: int = 32,
    together: float = 30.0,
    alone: float = 20.0,
    warmup: float = 3.0,
    rate_headers: bool = True,
    tokens_per_call: float | None = None,
    workdir: Path | None = None,
) -> Figures:
    """One scenario; returns its figures. `tokens_per_call` (when TPM binds) sizes the work."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="fanout-procs-"))
    sargs = ["--rpm", f"{rpm:g}", "--latency", f"{latency * 1000:g}ms"]
    sargs += ["--limit-shape", shape, "--limit-window", f"{window:g}"]
    if tpm is not None:
        sargs += ["--tpm", f"{tpm:g}"]
    if not rate_headers:
        sargs.append("--no-rate-headers")
    server, url = start_server(sargs, tmp / "server.log")
    per_s = rpm / 60.0
    if tpm is not None and tokens_per_call:  # to size the work; measured after the run
        per_s = min(per_s, tpm / 60.0 / tokens_per_call)
    figures = Figures(per_s)
    try:
        env = dict(os.environ, FANOUT_HOME=str(tmp / "home"), OPENAI_API_KEY=KEY)
        env.pop("FANOUT_CONFIG", None)
        batch: list[subprocess.Popen[str]] = []
        share = per_s * together / procs
        for p in range(procs):
            n = int(share + (per_s * alone if p == procs - 1 else 0))
            src = tmp / f"in-{p}.jsonl"
            write_lines(src, n, f"p{p}")
            figures.lines += n
            cmd = [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(tmp / f"out-{p}")]
            cmd += ["--provider", "openai", "--base-url", url + "/v1", "--model", MODEL]
            cmd += ["--concurrency", str(concurrency), "--json", "--attempts", "6"]
            if configure:
                cmd += ["--rpm", f"{rpm:g}"] + (["--tpm", f"{tpm:g}"] if tpm else [])
            batch.append(
                subprocess.Popen(
                    cmd, env=env, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
                )
            )
        t0 = time.monotonic()
        samples: list[tuple[float, int, int, int]] = []
        held: list[tuple[float, int]] = []  # processes holding a lease on the account
        ends: dict[int, float] = {}
        while len(ends) < procs:
            s = stats(url)
            now = time.monotonic() - t0
            samples.append((now, s["completed_total"], s["rejected_429"], s["requests_total"]))
            held.append((now, holders(tmp / "home" / "accounts.db")))
            for i, b in enumerate(batch):
                if i not in ends and b.poll() is not None:
                    ends[i] = now
            time.sleep(0.25)
        for b in batch:
            out, err = b.communicate()
            try:
                summary = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise RuntimeError(f"fanout batch said: {out!r} {err[-2000:]!r}") from None
            figures.failed += int(summary.get("failed", 0))
            figures.done += int(summary.get("done", 0))
        s = stats(url)
        samples.append((time.monotonic() - t0, s["completed_total"], s["rejected_429"], 0))
    finally:
        server.terminate()
        server.wait()
        if server.stdout is not None:
            server.stdout.close()
    if tpm is not None:  # the tokens a call took, from the answers' usage
        used = calls = 0
        for p in range(procs):
            for line in (tmp / f"out-{p}").read_text(encoding="utf-8").splitlines():
                usage = json.loads(line)["response"]["body"].get("usage") or {}
                used += int(usage.get("total_tokens") or 0)
                calls += 1
        if calls:
            figures.limit_per_s = per_s = min(rpm / 60.0, tpm / 60.0 / (used / calls))
    figures.most_attempts = most_attempts(tmp / "home" / "fanout.db")
    if workdir is None:
        shutil.rmtree(tmp, ignore_errors=True)
    order = sorted(ends.values())
    figures.ends = order
    if os.environ.get("BENCH_TRACE"):  # answers per second, second by second
        marks = [s for s in samples if s[0] >= 0]
        for i, (a, b) in enumerate(zip(marks[::4], marks[4::4], strict=False)):
            got = (b[1] - a[1]) / (b[0] - a[0])
            n = held[min(4 * i + 4, len(held) - 1)][1]
            print(f"{a[0]:6.1f}s {got:6.1f}/s 429s {b[2]} holders {n}", file=sys.stderr)
    first = next((t for t, done, *_ in samples if done > 0), 0.0)  # after the start-up
    figures.overlap = max((n for _, n in held), default=0)
    all_in = next((t for t, n in held if n == figures.overlap), 0.0)
    # (at least the last `MIN_WINDOW_S` before the first end: a shorter span is a sample or two)
    start = max(first + warmup, min(all_in + warmup, order[0] - MIN_WINDOW_S))
    figures.together = rate(samples, start, order[0]) / per_s
    figures.together_from_first = rate(samples, first + warmup, order[0]) / per_s
    last_end = order[-1]
    if procs > 1:
        others = order[-2]
        for t, *_ in samples:
            if t >= others and t + 2.0 <= last_end and rate(samples, t, t + 2.0) >= 0.95 * per_s:
                figures.alone_after_s = t - others
                break
        figures.alone = rate(samples, others, last_end - 0.5) / per_s
    total = samples[-2][3] if len(samples) > 1 else 0
    figures.rejected_429_share = samples[-1][2] / total if total else 0.0
    return figures


def holders(db: Path) -> int:
    """How many processes hold a lease on an account in `accounts.db` now (0 before any)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            (n,) = con.execute("SELECT COUNT(DISTINCT pid) FROM leases").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(n)


def most_attempts(db: Path) -> int:
    """The most attempts one task made, over all the runs in the run store."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            (n,) = con.execute(
                "SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM attempts GROUP BY rid, n)"
            ).fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return 0
    return int(n or 0)


def rate(samples: list[tuple[float, int, int, int]], start: float, end: float) -> float:
    """Answers per second between `start` and `end` (the samples nearest inside)."""
    inside = [s for s in samples if start <= s[0] <= end]
    if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
        return 0.0
    return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", type=int, default=2)
    p.add_argument("--rpm", type=float, default=600.0)
    p.add_argument("--tpm", type=float)
    p.add_argument("--tokens-per-call", type=float, help="when TPM binds: tokens per call")
    p.add_argument("--configure", action="store_true", help="give each process --rpm/--tpm")
    p.add_argument("--shape", default="gcra")
    p.add_argument("--window", type=float, default=60.0)
    p.add_argument("--latency", type=float, default=0.2)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--together", type=float, default=30.0)
    p.add_argument("--alone", type=float, default=20.0)
    p.add_argument("--no-rate-headers", action="store_true")
    a = p.parse_args()
    f = run(
        procs=a.procs,
        rpm=a.rpm,
        tpm=a.tpm,
        tokens_per_call=a.tokens_per_call,
        configure=a.configure,
        shape=a.shape,
        window=a.window,
        latency=a.latency,
        concurrency=a.concurrency,
        together=a.together,
        alone=a.alone,
        rate_headers=not a.no_rate_headers,
    )
    print(f"ends: {[round(e, 1) for e in f.ends]}", file=sys.stderr)
    print(json.dumps(f.as_dict()))


if __name__ == "__main__":
    main()
