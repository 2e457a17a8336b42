"""`fanout serve` as a subprocess on a free loopback port, driven over real HTTP (httpx),
against the sim-server (another subprocess) through the OpenAI wire format."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.benches import bench_module

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"


def clean_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.pop("FANOUT_TOKEN", None)
    env["FANOUT_HOME"] = str(home)
    return env


class Server:
    """One `fanout serve` process; `client` speaks to it with the token."""

    def __init__(self, root: Path, home: Path, args: list[str]) -> None:
        self.root, self.home, self.args = root, home, args
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.client: httpx.Client

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fanout", "serve", "--port", "0", "--token", TOKEN,
             "--root", str(self.root), *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(self.home),
            cwd=self.root,
        )  # fmt: skip
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"(http://127\.0\.0\.1:\d+)/\?token=(\S+)", line)
            if m:
                assert m.group(2) == TOKEN
                self.url = m.group(1)
                self.client = httpx.Client(
                    base_url=self.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
                )
                return self
        self.proc.kill()
        raise RuntimeError(f"fanout serve did not start: {self.proc.communicate()}")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.communicate(timeout=30)
        self.client.close()

    def stop(self) -> str:
        """SIGINT (as Ctrl-C) and what it said on stderr."""
        if self.proc is None or self.proc.poll() is not None:
            return ""
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        self.client.close()
        return err

    def run(self, run_id: str) -> dict[str, Any]:
        r = self.client.get(f"/api/runs/{run_id}")
        assert r.status_code == 200, r.text
        data: dict[str, Any] = r.json()
        return data

    def wait(self, run_id: str, until: tuple[str, ...] = ("completed",), within: float = 120):
        """Poll the run's status until it is one of `until` (and not finalizing)."""
        give_up = time.monotonic() + within
        while time.monotonic() < give_up:
            d = self.run(run_id)
            if d["status"] in until:
                return d
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} stayed {d['status']} ({d['request_counts']})")

    def run_ids(self) -> set[str]:
        r = self.client.get("/api/runs")
        assert r.status_code == 200
        return {x["id"] for x in r.json()["runs"]}


def sse(client: httpx.Client, path: str, last_id: str | None = None, stop_after: int | None = None):
    """(events, last id): read a run's SSE stream until `end` or `stop_after` task events."""
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[tuple[str, dict[str, Any]]] = []
    last = last_id
    tasks = 0
    with client.stream("GET", path, headers=headers, timeout=120) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("text/event-stream")
        kind, data, eid = "", "", None
        for line in r.iter_lines():
            if line.startswith("id: "):
                eid = line[4:]
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and kind:
                events.append((kind, json.loads(data)))
                if eid is not None:
                    last = eid
                if kind == "task":
                    tasks += 1
                if kind == "end" or (stop_after is not None and tasks >= stop_after):
                    break
                kind, data, eid = "", "", None
    return events, last


def jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def answers(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """custom_id -> the answer's text (or error) of batch output lines: what must be equal
    between two runs of the same input (ids, times and run names differ)."""
    out = {}
    for x in lines:
        body = (x.get("response") or {}).get("body") or {}
        choices = body.get("choices") or [{}]
        out[x["custom_id"]] = (choices[0].get("message") or {}).get("content") or x.get("error")
    return out


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("sim")
    env = clean_env(work)
    with bench_module("crash").sim_server(work, "base=60ms,jitter=0.2", env) as url:
        yield url


def via_sim(url: str) -> list[str]:
    return ["--provider", "openai", "--base-url", url + "/v1", "--no-cache"]


@contextlib.contextmanager
def serving(root: Path, home: Path, args: list[str]) -> Iterator[Server]:
    s = Server(root, home, args).start()
    try:
        yield s
    finally:
        s.stop()
