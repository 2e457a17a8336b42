"""The dashboard watching a big run: does the page stay responsive, and what does watching
cost the run?

`fanout serve` (simulator, `--concurrency C`, `--sim-latency L`) runs N tasks twice, each
on a fresh server and store, submitted over HTTP as `{"input_path": ...}`: once with nobody
watching, once with the dashboard's run page open in Debian's Chromium (Playwright,
headless) from the start to the end of the run. While the page is open, every 0.5 s the
script measures:

- the page's round trip: `page.evaluate("1")` queues behind whatever the page's main thread
  is doing, so its latency is how long a click would wait;
- long tasks (the browser's `longtask` entries: main-thread work over 50 ms), their count,
  longest and sum;
- the DOM's size (elements) and the script heap (`performance.memory`);
- what the page shows (the completed count, the Gantt's bars).

At the end: both runs' wall times (created to finished, as the store has them), how often
the counts were redrawn, how many timeline fetches there were and the longest, and the
largest task table the DOM ever held.

    .venv/bin/python bench/dashboard.py --tasks 100000 --concurrency 64 --latency 20ms

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
TERMINAL = {"completed", "failed", "cancelled", "expired"}

#: installed before the page's own scripts: long tasks and counts redraws are recorded
INIT = """
window.__bench = {long: [], redraws: 0};
new PerformanceObserver((l) => { for (const e of l.getEntries()) __bench.long.push(e.duration); })
  .observe({type: "longtask", buffered: true});
document.addEventListener("DOMContentLoaded", () => {
  const target = document.getElementById("view");
  new MutationObserver((ms) => {
    if (ms.some((m) => m.target.id === "counts" || m.target.parentElement?.id === "counts"))
      __bench.redraws++;
  }).observe(target, {childList: true, subtree: true});
});
"""

#: the completed count the page shows
SHOWN = "+(document.querySelector('#counts .c-completed b')?.textContent || '0').replace(/,/g, '')"
SAMPLE = f"""() => ({{
  nodes: document.getElementsByTagName("*").length,
  rows: document.querySelectorAll("#tasks tbody tr").length,
  heap: performance.memory ? performance.memory.usedJSHeapSize : null,
  shown: {SHOWN},
  status: document.querySelector("#status")?.textContent || "",
  bars: +(document.querySelector("#gantt")?.dataset.drawnBars || 0),
}})"""


class Server:
    def __init__(self, root: Path, home: str, concurrency: int, latency: str) -> None:
        self.log = (root / f"serve-{home}.log").open("w")
        env = {**os.environ, "FANOUT_HOME": str(root / home), "FANOUT_TOKEN": ""}
        args = f"serve --port 0 --concurrency {concurrency} --sim-latency {latency} --no-cache"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", *args.split()],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if m := re.search(r"(http://\S+/\?token=\S+)", line):
                self.url = m.group(1)
                break
        else:
            raise SystemExit(f"fanout serve printed no URL: see {root / f'serve-{home}.log'}")
        self.base = self.url.split("/?")[0]
        self.token = self.url.rsplit("=", 1)[1]

    def api(self, path: str, body: Any = None) -> Any:
        req = urllib.request.Request(
            self.base + path,
            method="GET" if body is None else "POST",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def run(self, jobs: Path) -> str:
        return str(self.api("/api/runs", {"input_path": str(jobs)})["id"])

    def wait(self, run_id: str, ended: Any = None) -> float:
        """The run's wall time as its store records it (created to finished), once it ended;
        `ended()` (the page's view, sampled meanwhile) says when to ask the API."""
        while True:
            if ended is None or ended():
                run = self.api(f"/api/runs/{run_id}")
                if run["status"] in TERMINAL:
                    return float(run["finished_at"]) - float(run["created_at"])
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency", default="20ms")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="看板-") as tmp:
        root = Path(tmp)
        jobs = [root / "a.jsonl", root / "b.jsonl"]
        for n, path in enumerate(jobs):
            with path.open("w", encoding="utf-8") as f:
                for i in range(args.tasks):
                    row = {"id": f"任务-{n}-{i}", "prompt": f"解释第{i}个概念"}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
        # each run on a server and store of its own: neither meets the other's rows
        server = Server(root, "home-a", args.concurrency, args.latency)
        try:
            alone = server.wait(server.run(jobs[0]))
            print(f"unwatched: {alone:.1f} s", flush=True)
        finally:
            server.stop()
        server = Server(root, "home-b", args.concurrency, args.latency)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.add_init_script(INIT)
                page.goto(server.url)  # the token becomes the cookie
                run_id = server.run(jobs[1])
                page.goto(server.base + f"/#/runs/{run_id}")
                samples: list[dict[str, Any]] = []

                def ended() -> bool:
                    """One sample of the page; true once it shows the run over."""
                    t = time.perf_counter()
                    page.evaluate("1")
                    rtt = time.perf_counter() - t
                    samples.append({**page.evaluate(SAMPLE), "rtt_ms": rtt * 1000})
                    return str(samples[-1]["status"]) in TERMINAL

                watched = server.wait(run_id, ended)
                # the page ends on the final count (it may lag the API by a redraw)
                final = server.api(f"/api/runs/{run_id}")["request_counts"]["completed"]
                page.wait_for_function(f"() => {SHOWN} === {final}", timeout=30_000)
                bench = page.evaluate("window.__bench")
                fetches = page.evaluate(
                    "performance.getEntriesByType('resource')"
                    ".filter(e => e.name.includes('/timeline')).map(e => e.duration)"
                )
                browser.close()
        finally:
            server.stop()

    rtts = sorted(s["rtt_ms"] for s in samples)
    figures = {
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "latency": args.latency,
        "unwatched_s": round(alone, 2),
        "watched_s": round(watched, 2),
        "watched_over_unwatched": round(watched / alone, 3),
        "samples": len(samples),
        "rtt_ms_median": round(statistics.median(rtts), 1),
        "rtt_ms_p95": round(rtts[int(len(rtts) * 0.95)], 1),
        "rtt_ms_max": round(rtts[-1], 1),
        "long_tasks": len(bench["long"]),
        "long_task_max_ms": round(max(bench["long"], default=0), 1),
        "long_task_sum_ms": round(sum(bench["long"]), 1),
        "counts_redraws_per_s": round(bench["redraws"] / watched, 2),
        "timeline_fetches": len(fetches),
        "timeline_fetch_max_ms": round(max(fetches, default=0), 1),
        "dom_nodes_max": max(s["nodes"] for s in samples),
        "table_rows_max": max(s["rows"] for s in samples),
        "heap_mb_max": round(max(s["heap"] or 0 for s in samples) / 1e6, 1),
        "gantt_bars_last": samples[-1]["bars"],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
