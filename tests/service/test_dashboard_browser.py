"""The dashboard as a user meets it: `fanout serve` started as a subprocess on a free port,
its printed URL (token in it) opened in Debian's Chromium driven by Playwright, a batch of
Chinese tasks uploaded through the page's form; then the counts rise, the Gantt draws, a
task's drawer opens with its output, a cancel takes effect. Screenshots of each view are
saved (into $FANOUT_DASHBOARD_SHOTS when set: that is how docs/dashboard-*.png are made)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import fanout, write_jsonl

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
TASKS = 600  # a run long enough to still be running when the page cancels it
#: slow enough that the run is watched while it runs; some 429s and 500s so retries show
SERVE = (
    "serve --port 0 --concurrency 4 --sim-latency base=120ms,jitter=0.3 "
    "--sim-faults 429=0.08,500=0.04 --no-cache --grace 1"
)
TERMINAL = {"completed", "failed", "cancelled", "expired"}
#: the completed count on the run page, as a number (0 before the page has drawn it)
COMPLETED = (
    "+(document.querySelector('#counts .c-completed b')?.textContent || '0').replace(/,/g, '')"
)


class Served:
    """The server as the tests see it: its printed URL, token, folders, and its API."""

    def __init__(self, url: str, root: Path, home: Path) -> None:
        self.url, self.root, self.home = url, root, home
        self.base = url.split("/?")[0]
        self.token = url.rsplit("=", 1)[1]

    def api(self, path: str, method: str = "GET", body: object = None) -> Any:
        """The API as a script calls it (the standard library's client, the token in a header)."""
        req = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`fanout serve` on a free loopback port, with a simulator slow enough that a run is
    watched while it runs."""
    root = tmp_path_factory.mktemp("看板")
    home = root / "home"
    log = (root / "serve.log").open("w")  # a file, not a pipe nobody reads while it runs
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", *SERVE.split()],
        cwd=root,
        env={**os.environ, "FANOUT_HOME": str(home), "FANOUT_TOKEN": ""},
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        url = ""
        assert proc.stdout is not None
        for line in proc.stdout:  # the URL is printed once the server is ready
            if m := re.search(r"(http://\S+/\?token=\S+)", line):
                url = m.group(1)
                break
        assert url, f"no URL printed: {(root / 'serve.log').read_text()}"
        yield Served(url, root, home)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
        log.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright's driver; nothing downloaded."""
    # no skip when it is missing: `make test` installs the dev extra, which has playwright
    from playwright import sync_api

    assert CHROMIUM.exists(), "Chromium is missing: `make test` installs it (apt-get)"
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (no cookie yet) that fails the test on a script error or a refused
    request."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    yield pg
    context.close()
    assert not problems, problems


def shot(page: Any, name: str, tmp: Path) -> None:
    """A screenshot of the page, kept in tmp and copied where $FANOUT_DASHBOARD_SHOTS says."""
    out = tmp / f"dashboard-{name}.png"
    page.screenshot(path=str(out))
    assert out.read_bytes()[:4] == b"\x89PNG"
    if folder := os.environ.get("FANOUT_DASHBOARD_SHOTS"):
        shutil.copy(out, Path(folder) / out.name)


def completed(page: Any) -> int:
    return int(page.inner_text("#counts .c-completed b").replace(",", ""))


def test_watch_a_run_open_a_task_and_cancel(server: Served, page: Any, tmp_path: Path) -> None:
    jobs = write_jsonl(
        tmp_path / "任务.jsonl",
        [
            {"id": f"问题-{i:03d}", "prompt": f"用一句话解释第{i}个离散数学概念"}
            for i in range(TASKS)
        ],
    )
    page.goto(server.url)
    # the token left the address bar; the cookie the server set carries the page on
    assert "token" not in page.url
    page.wait_for_selector("#upload")

    # start a run the way a user would: the upload form
    page.set_input_files('#upload input[type="file"]', str(jobs))
    page.click('#upload button[type="submit"]')
    page.wait_for_url(re.compile(r"#/runs/"))
    run_id = page.url.split("#/runs/")[1]

    # counts rise: seen twice on the page while the run is in progress
    page.wait_for_function(f"() => {COMPLETED} > 0")
    first = completed(page)
    page.wait_for_function(f"() => {COMPLETED} > {first}")
    assert first < completed(page) < TASKS
    assert page.inner_text("#status") == "in_progress"

    # the Gantt draws, with the report's renderer, and grows with the run
    page.wait_for_function("() => +document.querySelector('#gantt').dataset.drawnBars > 0")
    assert page.locator("#gantt canvas.ftl-gantt").count() == 1
    bars = int(page.get_attribute("#gantt", "data-drawn-bars") or 0)
    grown = f"+document.querySelector('#gantt').dataset.drawnBars > {bars}"
    slow = "!document.querySelector('#gantt-note').hidden"
    page.wait_for_function(f"() => {grown} || {slow}")
    if page.is_visible("#gantt-note"):  # a loaded machine read the timeline slowly: ask
        page.click("#gantt-refresh")
        page.wait_for_function(f"() => {grown}")
    # the lanes and limiter panels are filled from the live engine
    assert "default" in page.inner_text("#lanes")
    assert "sim" in page.inner_text("#limiter")
    shot(page, "run", tmp_path)

    # the task table holds one page of rows, whatever the run's size; the pager moves on
    page.locator("#tasks-panel").scroll_into_view_if_needed()
    rows = "#tasks tbody tr[data-key]"
    page.wait_for_function(f"() => document.querySelectorAll('{rows}').length === 50")
    assert f"page 1 of {TASKS // 50}" in page.inner_text("#pager")
    page.click('#pager button[data-o="next"]')
    page.wait_for_function(f"() => document.querySelector('{rows} td')?.textContent === '50'")
    assert page.locator(rows).count() == 50

    # the task table's filter, then a finished task's drawer with its output
    page.select_option('select[data-f="state"]', "done")
    page.wait_for_function(
        "() => { const p = [...document.querySelectorAll('#tasks tbody tr[data-key] .pill')];"
        " return p.length > 0 && p.every(x => x.textContent === 'done'); }"
    )
    row = page.locator("#tasks tbody tr[data-key]").first
    key = row.get_attribute("data-key")
    assert key
    assert key.startswith("问题-")
    row.click()
    page.wait_for_selector("#drawer:not([hidden]) #task-output")
    assert page.inner_text("#drawer-title") == key
    assert page.inner_text("#task-output").strip()
    assert page.locator("#drawer-body table").first.locator("tbody tr").count() >= 1
    assert page.is_disabled("#task-cancel")  # a finished task has nothing to cancel
    shot(page, "drawer", tmp_path)
    page.keyboard.press("Escape")
    assert page.locator("#drawer").is_hidden()

    # cancel: two clicks (the first arms the button), then the run stops short
    page.click("#cancel")
    assert "again" in page.inner_text("#cancel")
    page.click("#cancel")
    page.wait_for_function(
        "() => document.querySelector('#status').textContent === 'cancelled'", timeout=20_000
    )
    status = server.api(f"/api/runs/{run_id}")
    counts = status["request_counts"]
    assert status["status"] == "cancelled"
    assert counts["completed"] + counts["failed"] < TASKS
    # a cancelled run is over: nothing to resume (the server says which runs can be)
    assert page.is_disabled("#resume")
    assert page.is_disabled("#cancel")

    # a run of the CLI in another process: listed beside it, read-only
    p = fanout(
        "batch", write_jsonl(tmp_path / "命令行.jsonl", [{"id": "甲", "prompt": "你好"}]),
        "-o", tmp_path / "out.jsonl", "--no-progress", env={"FANOUT_HOME": str(server.home)},
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    page.goto(server.base + "/#/")
    page.wait_for_selector(f'#runs tr[data-id="{run_id}"]')
    page.wait_for_function("() => document.querySelectorAll('#runs tr[data-id]').length === 2")
    assert "cancelled" in page.inner_text(f'#runs tr[data-id="{run_id}"]')
    other = page.locator("#runs tr[data-id]").first
    assert "other process" in other.inner_text()
    shot(page, "list", tmp_path)
    other.locator("a").click()
    page.wait_for_function("() => document.querySelector('#status').textContent === 'completed'")
    assert "read-only" in page.inner_text("#owner")
    assert page.is_disabled("#cancel")
    assert page.is_disabled("#resume")


def test_settings_saved_from_the_page_reach_the_engine(
    server: Served, page: Any, tmp_path: Path
) -> None:
    # a run first, so the engine has its provider (whose budget the page then sets)
    write_jsonl(server.root / "一个.jsonl", [{"id": "乙", "prompt": "你好"}])
    run_id = server.api("/api/runs", "POST", {"input_path": "一个.jsonl"})["id"]
    while (status := server.api(f"/api/runs/{run_id}")["status"]) not in TERMINAL:
        time.sleep(0.1)
    assert status == "completed"
    page.goto(server.url + "#/settings")
    field = '#settings input[name="concurrency"]'
    page.wait_for_selector(field)
    assert page.input_value(field) == "4"
    shot(page, "settings", tmp_path)
    page.fill(field, "3")
    page.click('#settings button[type="submit"]')
    page.wait_for_function(
        "() => document.querySelector('#settings-msg').textContent.startsWith('saved')"
    )
    assert server.api("/api/settings")["concurrency"] == 3
    # a provider's budget, from none to 6,000 requests a minute
    rpm = page.locator("#settings input[data-prov][data-k=rpm]").first
    assert rpm.input_value() == ""
    rpm.fill("6000")
    page.click('#settings button[type="submit"]')
    page.wait_for_function(
        "() => document.querySelector('#settings-msg').textContent.includes('rpm')"
    )
    (provider,) = server.api("/api/settings")["providers"].values()
    assert provider["rpm"] == 6000
    # the page shows what the server now has, and sends nothing when nothing changed
    assert page.input_value(field) == "3"
    page.click('#settings button[type="submit"]')
    page.wait_for_function(
        "() => document.querySelector('#settings-msg').textContent === 'nothing changed'"
    )
    server.api("/api/settings", "PATCH", {"concurrency": 4})


def test_a_slow_timeline_is_read_again_when_asked_and_at_the_end(server: Served, page: Any) -> None:
    """A big run's timeline takes the server seconds to read: the page stops reading it on
    its own, offers a button, and reads it once more when the run ends. The delay is put on
    the real answer by the browser's router."""
    write_jsonl(
        server.root / "慢.jsonl", [{"id": f"慢-{i}", "prompt": "你好"} for i in range(TASKS)]
    )
    run_id = server.api("/api/runs", "POST", {"input_path": "慢.jsonl"})["id"]

    reads: list[str] = []

    def slow(route: Any) -> None:
        reads.append(route.request.url)
        if len(reads) == 1:
            time.sleep(2.2)  # over the page's 2 s: this timeline counts as slow to read
        route.continue_()

    page.route(re.compile(r"/timeline(\?|$)"), slow)
    page.goto(server.url + f"#/runs/{run_id}")
    page.wait_for_selector("#gantt-note:not([hidden])", timeout=30_000)
    assert "when asked" in page.inner_text("#gantt-note")
    assert len(reads) == 1
    with page.expect_request(re.compile(r"/timeline(\?|$)")):
        page.click("#gantt-refresh")
    # the run ends (cancelled here): one more read, and the note goes
    with page.expect_request(re.compile(r"/timeline(\?|$)"), timeout=30_000):
        server.api(f"/api/runs/{run_id}/cancel", "POST", {})
    page.wait_for_selector("#gantt-note[hidden]", state="attached", timeout=30_000)
    # the status comes by its own event, not with the timeline: on a loaded machine it can
    # land after the note goes (seen at a load of 16)
    page.wait_for_function(
        "() => document.querySelector('#status').textContent === 'cancelled'", timeout=30_000
    )
    assert len(reads) == 3  # the first, the one asked for, the last
