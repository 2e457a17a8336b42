"""A spend cap and `--retry-failed` through the real CLI over HTTP: where a capped run stops.

`fanout batch --provider openai --base-url <sim-server> --max-cost CAP` on N lines (each with
`max_tokens`, so a call's estimate is known: its prompt plus that output limit, at `sim-1`'s
price of $1 / $2 per million tokens). Reported:

1. the capped run: its status (`budget_exhausted`), what it spent against the cap, the gap
   left in calls' estimates (target: under one; "stops within one call's estimate") and how
   far it went over (target: never by more than the calls in flight; the engine holds every
   call's estimate while it runs, so 0);
2. `fanout resume RUN --max-cost HIGHER`: the rest done, and the requests the sim-server saw
   against the lines (nothing sent twice);
3. a run against a server failing 30 % of calls with `--attempts 1`, then
   `fanout resume RUN --retry-failed`: the requests the resume sent against the tasks that
   had failed (target: exactly those).

    .venv/bin/python bench/cost_cap.py [--lines 400 --cap 0.05 --concurrency 16]

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ratelimit_http import sim_server

#: `sim-1`'s price (fanout's default table), dollars per token
PRICE_IN, PRICE_OUT = 1.0 / 1e6, 2.0 / 1e6
MAX_TOKENS = 400
RPM = 1_000_000.0  # the server's budget: no 429 is a rate here


def fanout(home: Path, url: str, *args: str) -> tuple[int, dict[str, Any], str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(FANOUT_HOME=str(home), OPENAI_API_KEY="sk-bench-cost-cap")
    p = subprocess.run(
        [sys.executable, "-m", "fanout", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    lines = [x for x in p.stdout.splitlines() if x.startswith("{")]
    if not lines:
        raise SystemExit(
            f"fanout {' '.join(args[:2])}: no summary (exit {p.returncode}):\n{p.stderr}"
        )
    return p.returncode, json.loads(lines[-1]), p.stderr


def stats(url: str, reset: bool = False) -> dict[str, Any]:
    if reset:
        req = urllib.request.Request(url + "/stats/reset", method="POST")
        urllib.request.urlopen(req).close()
    with urllib.request.urlopen(url + "/stats") as r:
        return dict(json.load(r))


def write_lines(path: Path, n: int) -> list[str]:
    prompts = [f"用一段话解释第 {i} 个概念，并举一个例子。" for i in range(n)]
    rows = [{"id": f"q{i}", "prompt": p, "max_tokens": MAX_TOKENS} for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return prompts


def run_id(stderr: str) -> str:
    return next(x.split()[1] for x in stderr.splitlines() if x.startswith("run r-"))


def run(lines: int, cap: float, concurrency: int, latency: float, workdir: Path) -> dict[str, Any]:
    home = workdir / "home"
    src = workdir / "输入.jsonl"
    write_lines(src, lines)
    base = ["--provider", "openai", "--model", "sim-1", "--concurrency", str(concurrency)]
    base += ["--json", "--no-progress", "--no-cache"]
    out: dict[str, Any] = {"lines": lines, "cap_usd": cap, "concurrency": concurrency}
    with sim_server(RPM, latency) as url:
        args = ["--base-url", url + "/v1", *base]
        code, first, err = fanout(
            home,
            url,
            "batch",
            str(src),
            "-o",
            str(workdir / "out.jsonl"),
            *args,
            "--max-cost",
            str(cap),
        )
        rows = [json.loads(x) for x in (workdir / "out.jsonl").read_text("utf-8").splitlines()]
        usages = [r["response"]["body"]["usage"] for r in rows if r.get("response")]
        prompt_tokens = max(u["prompt_tokens"] for u in usages)  # (the batch output format)
        estimate = prompt_tokens * PRICE_IN + MAX_TOKENS * PRICE_OUT
        spent = float(first["cost_usd"])
        out.update(
            capped_exit=code,
            capped_status=first["status"],
            capped_done=first["done"],
            spent_usd=round(spent, 6),
            call_estimate_usd=round(estimate, 6),
            gap_in_estimates=round((cap - spent) / estimate, 3),
            over_usd=round(max(0.0, spent - cap), 6),
            mean_call_usd=round(spent / max(first["done"], 1), 6),
        )
        rid = run_id(err)
        sent_before = stats(url)["requests_total"]
        code, second, _ = fanout(home, url, "resume", rid, "--max-cost", str(cap * 100), "--json")
        s = stats(url)
        out.update(
            resumed_exit=code,
            resumed_status=second["status"],
            resumed_done=second["done"],
            requests_total=s["requests_total"],
            requests_after_resume=s["requests_total"] - sent_before,
            answered_twice=sum(1 for k in s["by_request_hash"].values() if k > 1),
        )
    with sim_server(RPM, latency, ["--faults", "500=0.3"]) as url:
        args = ["--base-url", url + "/v1", *base]
        src2 = workdir / "失败.jsonl"
        write_lines(src2, lines)
        code, failing, err = fanout(
            home,
            url,
            "batch",
            str(src2),
            "-o",
            str(workdir / "out2.jsonl"),
            *args,
            "--attempts",
            "1",
        )
        rid = run_id(err)
        before = stats(url)["requests_total"]
        code, again, _ = fanout(
            home, url, "resume", rid, "--retry-failed", "--attempts", "1", "--json"
        )
        out.update(
            failed_first=failing["failed"],
            retry_requests=stats(url)["requests_total"] - before,
            failed_after_retry=again["failed"],
            done_after_retry=again["done"],
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=400)
    ap.add_argument("--cap", type=float, default=0.05, help="US dollars")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.05, help="server seconds per answer")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fanout-cost-") as tmp:
        out = run(args.lines, args.cap, args.concurrency, args.latency, Path(tmp))
    print(
        f"capped: {out['capped_status']} after {out['capped_done']} lines, spent "
        f"${out['spent_usd']} of ${out['cap_usd']} (gap {out['gap_in_estimates']} call "
        f"estimates of ${out['call_estimate_usd']}; over by ${out['over_usd']})"
    )
    print(
        f"resumed with a higher cap: {out['resumed_status']}, {out['resumed_done']} done; "
        f"{out['requests_total']} requests for {out['lines']} lines, "
        f"{out['answered_twice']} sent twice"
    )
    print(
        f"--retry-failed: {out['failed_first']} failed, the resume sent {out['retry_requests']} "
        f"requests; {out['failed_after_retry']} failed again"
    )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
