"""The pictures as a user gets them: `fanout report --html/--png/--trace` from the command
line, the page opened in headless Chromium with the network unusable, and a 100,000-task
run's page under 15 MB that still draws."""

from __future__ import annotations

import html as html_lib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanout.report.html import write_html
from fanout.report.timeline import load_timeline
from fanout.store.sqlite import connect
from tests.e2e.test_cli_batch import fanout, write_jsonl
from tests.report.runs import big_store

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")


def chromium_dom(page: Path, profile: Path, fragment: str = "") -> str:
    """The page's DOM once its scripts have run, from Debian's headless Chromium, with every
    network path closed (a proxy that does not exist, no background fetches)."""
    assert CHROMIUM.exists(), "Chromium is missing: `make test` installs it (apt-get)"
    proc = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--proxy-server=127.0.0.1:9",  # the network is unusable for the page
            "--window-size=1400,900",
            "--virtual-time-budget=10000",
            "--dump-dom",
            page.as_uri() + fragment,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def drawn(dom: str) -> int:
    m = re.search(r'data-drawn-bars="(\d+)"', dom)
    assert m, "the page's script did not finish drawing the Gantt"
    return int(m.group(1))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], str]:
    """A `fanout batch` run with faults (so retries), in its own fanout home."""
    tmp = tmp_path_factory.mktemp("页面")
    env = {"FANOUT_HOME": str(tmp / "home")}
    jobs = write_jsonl(
        tmp / "任务.jsonl", [{"id": f"问-{i}", "prompt": f"解释第{i}个概念"} for i in range(30)]
    )
    p = fanout(
        "batch", jobs, "-o", tmp / "out.jsonl", "--concurrency", "6", "--no-progress",
        "--no-cache", "--sim-faults", "429=0.15,500=0.1", "--seed", "3", env=env,
    )  # fmt: skip
    assert p.returncode in (0, 1), p.stderr
    runs = json.loads(fanout("runs", "--json", env=env).stdout)
    return tmp, env, runs[0]["run_id"]


def test_report_writes_all_three_pictures(cli_run: tuple[Path, dict[str, str], str]) -> None:
    tmp, env, run_id = cli_run
    out = tmp / "图"
    out.mkdir()
    p = fanout(
        "report", run_id[:8], "--html", out / "运行.html", "--png", out / "运行.png",
        "--trace", out / "运行.json", env=env,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("wrote ") == 3
    stored = json.loads(fanout("report", run_id, "--json", env=env).stdout)["attempts"]
    trace = json.loads((out / "运行.json").read_text(encoding="utf-8"))
    assert sum(1 for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "wait") == stored
    assert (out / "运行.png").read_bytes()[:4] == b"\x89PNG"
    assert drawn(chromium_dom(out / "运行.html", tmp / "profile")) == stored
    # as a user would: the hover card of the first attempt, then ten wheel steps of zoom
    dom = chromium_dom(out / "运行.html", tmp / "profile", "#check")
    first = min(
        (e for e in trace["traceEvents"] if e["ph"] == "X" and e["cat"] != "wait"),
        key=lambda e: (e["ts"], e["tid"]),
    )
    card = html_lib.unescape(re.search(r'data-hover-card="([^"]*)"', dom).group(1))
    assert first["name"] in card
    assert f"attempt {first['args']['attempt']}" in card
    assert f"tokens {first['args']['tokens']:,}" in card
    zoom = json.loads(html_lib.unescape(re.search(r'data-zoom="([^"]*)"', dom).group(1)))
    assert zoom["v1"] - zoom["v0"] == pytest.approx(zoom["end"] * 0.8**10, rel=0.01)
    assert 0 < zoom["after"] < zoom["before"] == stored
    # nothing but the three files (no temporary left behind)
    assert sorted(f.name for f in out.iterdir()) == ["运行.html", "运行.json", "运行.png"]


def test_a_missing_folder_is_refused_and_nothing_is_written(
    cli_run: tuple[Path, dict[str, str], str],
) -> None:
    tmp, env, run_id = cli_run
    html = tmp / "有.html"
    p = fanout("report", run_id, "--html", html, "--trace", tmp / "没有" / "t.json", env=env)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1
    assert "does not exist" in p.stderr
    assert not html.exists()


def test_png_without_matplotlib_says_what_to_install(
    cli_run: tuple[Path, dict[str, str], str],
) -> None:
    tmp, env, run_id = cli_run
    out = tmp / "无图.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from fanout.cli import main\n"
        f"sys.argv = ['fanout', 'report', {run_id!r}, '--png', {str(out)!r}]\n"
        "main()"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0
    assert "fanout[report]" in p.stderr
    assert not out.exists()


def test_a_100000_task_run_makes_a_small_page_that_draws(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    run_id = big_store(path)
    db = connect(path)
    try:
        tl = load_timeline(db, run_id)
    finally:
        db.close()
    assert tl is not None
    assert len(tl.bars) > 100_000
    page = tmp_path / "大.html"
    size = write_html(tl, page)
    assert size < 15_000_000, f"{size:,} bytes"
    t0 = time.perf_counter()
    dom = chromium_dom(page, tmp_path / "profile")
    load_s = time.perf_counter() - t0
    n = drawn(dom)
    # every attempt is on screen at full zoom-out: the Gantt drew them all
    assert n == len(tl.bars)
    print(f"100,000 tasks: {size / 1e6:.1f} MB, Chromium loaded and drew it in {load_s:.1f} s")


def test_an_aggregated_page_draws_too(
    cli_run: tuple[Path, dict[str, str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fanout.report import html
    from fanout.store.sqlite import default_path

    tmp, env, run_id = cli_run
    monkeypatch.setenv("FANOUT_HOME", env["FANOUT_HOME"])
    db = connect(default_path())
    try:
        tl = load_timeline(db, run_id)
    finally:
        db.close()
    assert tl is not None
    monkeypatch.setattr(html, "MAX_BARS", 5)
    page = tmp / "聚合.html"
    write_html(tl, page)
    blocks = len(html.timeline_data(tl)["bars"]["s"])
    assert drawn(chromium_dom(page, tmp / "profile-agg")) == blocks > 0


def test_json_with_a_picture_is_refused(cli_run: tuple[Path, dict[str, str], str]) -> None:
    tmp, env, run_id = cli_run
    out = tmp / "j.html"
    p = fanout("report", run_id, "--json", "--html", out, env=env)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1
    assert not out.exists()
