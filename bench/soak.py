"""A long `fanout batch` against a faulty sim-server that restarts: does anything drift?

The sim-server (its own process, a fixed port, `--stats-file` so its counts survive
restarts) answers with injected 429s, 500s and timeouts; it is stopped and started again
three times, once a quarter, half and three quarters of the lines have a durable answer
(not at those fractions of the time: a batch still starting up on a loaded machine met a
server that was down before it ever answered, and fanout rightly gives up on a provider
that never answered after three failed probes, so every line failed with a connection
error). `fanout batch` is paced by `--rpm` so the run lasts about `--minutes`. Every 10 s
the batch process's RSS, open file descriptors and the SQLite store's size (with its WAL)
are sampled.

At the end: every input line has exactly one output line (0 lost), no request body was
completed twice by the server beyond the attempts the client gave up on (a timeout or a
connection a restart cut: the server may still have answered them), and RSS at the end
against RSS at minute 5 (or at a quarter of a shorter run). `--png` draws RSS over time.

    .venv/bin/python bench/soak.py --minutes 30 --png docs/soak_rss.png

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

SAMPLE_S = 10.0
RESTARTS = 3
RESTART_DOWN_S = 2.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(port: int, stats: Path, faults: str, latency: str) -> subprocess.Popen[str]:
    """The sim-server on `port`, once it answers. Its output goes to a file: a pipe nobody
    reads would fill and stall the server."""
    cmd = [sys.executable, "-m", "fanout", "sim-server", "--port", str(port)]
    cmd += ["--faults", faults, "--latency", latency, "--stats-file", str(stats)]
    log = stats.with_suffix(".log").open("a", encoding="utf-8")
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up:
        with contextlib.suppress(OSError):
            server_stats(f"http://127.0.0.1:{port}")
            return p
        if p.poll() is not None:
            break
        time.sleep(0.1)
    p.kill()
    p.wait()
    raise RuntimeError(f"the sim-server did not start on port {port}")


def stop_server(p: subprocess.Popen[str]) -> None:
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=30)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def server_stats(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/stats", timeout=30) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def answered(db: Path) -> int:
    """How many results the batch's store holds (read-only; 0 before it exists)."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return 0
    try:
        (k,) = con.execute("SELECT count(*) FROM results").fetchone()
        return int(k)
    except sqlite3.Error:
        return 0
    finally:
        con.close()


def store_mb(home: Path) -> float:
    return sum(p.stat().st_size for p in home.glob("fanout.db*") if p.is_file()) / 1e6


def soak(
    work: Path, seconds: float, rate: float, concurrency: int, say: Any = print
) -> dict[str, Any]:
    """Run the soak in `work`; returns the figures (see the module docstring)."""
    work.mkdir(parents=True, exist_ok=True)
    lines = max(100, int(rate * seconds))
    src = work / "输入.jsonl"
    with src.open("w", encoding="utf-8") as f:
        for i in range(lines):
            f.write(json.dumps({"id": f"s{i}", "prompt": f"第{i}题:解释并发"}, ensure_ascii=False))
            f.write("\n")
    home = work / "home"
    out = work / "out.jsonl"
    stats_file = work / "stats.json"
    for p in (stats_file, out):
        p.unlink(missing_ok=True)
    subprocess.run(["rm", "-rf", str(home)], check=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    faults, latency = "429=0.03,500=0.02,timeout=0.005", "20ms"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env["FANOUT_HOME"] = str(home)
    server = start_server(port, stats_file, faults, latency)
    cmd = [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(out)]
    cmd += ["--provider", "openai", "--base-url", url + "/v1", "--no-cache", "--no-progress"]
    cmd += ["--concurrency", str(concurrency), "--rpm", str(rate * 60), "--timeout", "5"]
    cmd += ["--attempts", "20", "--json"]
    samples: list[dict[str, Any]] = []
    restarts = 0
    restart_at = [lines * k / (RESTARTS + 1) for k in range(1, RESTARTS + 1)]
    t0 = time.monotonic()
    with subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as batch:
        next_sample = 0.0
        try:
            while batch.poll() is None:
                now = time.monotonic() - t0
                if now >= next_sample:
                    samples.append(
                        {
                            "t_s": round(now, 1),
                            "rss_mb": rss_mb(batch.pid),
                            "fds": fds(batch.pid),
                            "store_mb": round(store_mb(home), 2),
                        }
                    )
                    say(f"{now:7.0f} s  {samples[-1]}")
                    next_sample += SAMPLE_S
                if restarts < RESTARTS and answered(home / "fanout.db") >= restart_at[restarts]:
                    stop_server(server)
                    time.sleep(RESTART_DOWN_S)
                    server = start_server(port, stats_file, faults, latency)
                    restarts += 1
                    say(f"{now:7.0f} s  sim-server restarted ({restarts})")
                time.sleep(0.2)
            summary = batch.communicate()[0]
        finally:
            if batch.poll() is None:
                batch.kill()
        wall = time.monotonic() - t0
        code = batch.returncode
    stats = server_stats(url)
    stop_server(server)
    ids: dict[str, int] = {}
    failed = 0
    with out.open(encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            ids[obj["custom_id"]] = ids.get(obj["custom_id"], 0) + 1
            failed += obj["error"] is not None
    lost = sum(1 for i in range(lines) if f"s{i}" not in ids)
    repeated = sum(1 for k in ids.values() if k > 1)
    twice = sum(1 for k in stats["by_request_hash"].values() if k > 1)
    result = json.loads(summary.strip().splitlines()[-1]) if summary.strip() else None
    # an attempt the client gave up on (its timeout, a connection cut by a restart) may
    # still have been answered by the server: its retry is a second answer, not a repeat
    # of a committed one
    retried = (result or {}).get("retries_by_kind", {})
    cut = sum(retried.get(k, 0) for k in ("timeout", "connection_lost"))
    rss = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"] is not None]
    mark = min(300.0, seconds / 4)
    at_mark = next((r for t, r in rss if t >= mark), None)
    end = rss[-1][1] if rss else None
    figures = {
        "seconds": round(wall, 1),
        "lines": lines,
        "exit_code": code,
        "restarts": restarts,
        "lost": lost,
        "output_lines_repeated": repeated,
        "failed_lines": failed,
        "server_requests": stats.get("requests_total"),
        "answered_twice": twice,
        "answered_twice_unexplained": max(0, twice - cut),
        "faults": stats.get("faults"),
        "rss_mark_s": mark,
        "rss_at_mark_mb": at_mark,
        "rss_end_mb": end,
        "rss_end_vs_mark": round(end / at_mark, 3) if end and at_mark else None,
        "rss_max_mb": max((r for _, r in rss), default=None),
        "fds_first_last": [samples[0]["fds"], samples[-1]["fds"]] if samples else None,
        "store_mb_end": round(store_mb(home), 1),
        "summary": result,
        "samples": samples,
    }
    return figures


def plot(samples: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples if s["rss_mb"] is not None]
    r = [s["rss_mb"] for s in samples if s["rss_mb"] is not None]
    fig, ax = plt.subplots(figsize=(6, 2.6), dpi=100)
    ax.plot(t, r, color="#4e79a7")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS MB")
    ax.set_ylim(0, max(r) * 1.2 if r else 1)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def samples_in(log: Path) -> list[dict[str, Any]]:
    """The samples a soak printed, one per line ("  10 s  {...}")."""
    import ast

    out: list[dict[str, Any]] = []
    for line in log.read_text(encoding="utf-8").splitlines():
        i = line.find("{'t_s'")
        if i >= 0:
            out.append(ast.literal_eval(line[i:]))
    return out


def rss_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    rss = [(s["t_s"], s["rss_mb"]) for s in samples if s["rss_mb"]]
    at5 = next((r for t, r in rss if t >= 300.0), None)
    end = rss[-1][1] if rss else None
    return {
        "minutes": round(rss[-1][0] / 60, 1) if rss else 0,
        "rss_at_minute_5_mb": at5,
        "rss_end_mb": end,
        "end_vs_minute_5": round(end / at5, 3) if end and at5 else None,
        "rss_max_mb": max(r for _, r in rss) if rss else None,
        "fds_max": max((s["fds"] or 0) for s in samples) if samples else None,
        "store_mb_end": samples[-1]["store_mb"] if samples else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=200.0, help="lines per second (--rpm / 60)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/fanout-soak"))
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument(
        "--from-log",
        type=Path,
        default=None,
        help="draw --png from the samples a soak printed (one that was stopped early)",
    )
    a = ap.parse_args()
    if a.from_log is not None:
        samples = samples_in(a.from_log)
        if a.png is not None:
            plot(samples, a.png, f"fanout batch soak: RSS, {len(samples)} samples (10 s apart)")
        print(json.dumps({"samples": len(samples), "rss": rss_summary(samples)}))
        return
    figures = soak(a.workdir, a.minutes * 60, a.rate, a.concurrency)
    if a.png is not None:
        title = f"fanout batch soak: {figures['lines']:,} lines, {RESTARTS} server restarts"
        with contextlib.suppress(ImportError):
            plot(figures["samples"], a.png, title)
    print(json.dumps(figures, ensure_ascii=False))


if __name__ == "__main__":
    main()
