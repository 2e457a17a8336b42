"""`fanout serve` driven over HTTP: runs to completion equal to the CLI's, SSE reconnects,
cancel, the guard, and CLI runs of other processes seen live. One server for the module,
against the sim-server (60 ms a call)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.service.conftest import (
    ROOT,
    TOKEN,
    Server,
    answers,
    clean_env,
    jsonl,
    serving,
    sse,
    via_sim,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("服务")


@pytest.fixture(scope="module")
def server(work: Path, sim_url: str) -> Iterator[Server]:
    root = work / "根目录"
    root.mkdir()
    args = [*via_sim(sim_url), "--concurrency", "4", "--max-upload", "1MB"]
    with serving(root, work / "home", args) as s:
        yield s


def cli(work: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fanout", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env=clean_env(work / "home"),
        cwd=ROOT,
    )


def lines(n: int, tag: str) -> list[dict[str, Any]]:
    return [
        {"id": f"{tag}-{i:03d}", "prompt": f"用一句话解释第{i}个概念（{tag}）"} for i in range(n)
    ]


def test_batch_upload_runs_to_the_cli_s_results(server: Server, work: Path, sim_url: str) -> None:
    rows = lines(12, "批")
    src = server.root / "任务.jsonl"
    src.write_text(jsonl(rows), encoding="utf-8")
    r = server.client.post("/api/runs", files={"input": ("任务.jsonl", src.read_bytes())})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    d = server.wait(run_id)
    assert d["request_counts"]["total"] == 12
    assert d["request_counts"]["completed"] == 12
    assert d["kind"] == "batch"
    got = [
        httpx_json(x) for x in server.client.get(f"/api/runs/{run_id}/results").text.splitlines()
    ]
    assert [x["custom_id"] for x in got] == [x["id"] for x in rows]  # input order
    out = work / "cli-out.jsonl"
    p = cli(work, "batch", src, "-o", out, *via_sim(sim_url), "--no-progress")
    assert p.returncode == 0, p.stderr
    want = [httpx_json(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert answers(got) == answers(want)
    assert all(v and isinstance(v, str) for v in answers(got).values())
    # the same through a path under the root, and the task detail
    r = server.client.post("/api/runs", json={"input_path": "任务.jsonl"})
    assert r.status_code == 201, r.text
    server.wait(r.json()["id"])
    t = server.client.get(f"/api/runs/{run_id}/tasks/批-003").json()
    assert t["state"] == "done"
    assert t["output"] == answers(got)["批-003"]
    assert t["attempts"][0]["attempt"] == 1


def httpx_json(line: str) -> dict[str, Any]:
    import json

    out: dict[str, Any] = json.loads(line)
    return out


def test_canvas_run_writes_what_the_cli_writes(server: Server, work: Path, sim_url: str) -> None:
    mine = server.root / "库"
    shutil.copytree(ROOT / "examples" / "vault", mine)
    theirs = work / "cli-库"
    shutil.copytree(ROOT / "examples" / "vault", theirs)
    body = {"canvas": "库/离散数学.canvas", "agents": ["oral-explanation"]}
    r = server.client.post("/api/runs", json=body)
    assert r.status_code == 201, r.text
    d = server.wait(r.json()["id"])
    assert d["kind"] == "canvas"
    assert d["request_counts"]["completed"] == d["request_counts"]["total"] > 0
    p = cli(
        work, "canvas", "run", theirs / "离散数学.canvas", "--agents", "oral-explanation",
        *via_sim(sim_url), "--no-progress",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    notes = sorted(x.relative_to(mine) for x in mine.rglob("*.md") if "explanations" in str(x))
    assert notes
    assert notes == sorted(
        x.relative_to(theirs) for x in theirs.rglob("*.md") if "explanations" in str(x)
    )
    for n in notes:
        assert (mine / n).read_text(encoding="utf-8") == (theirs / n).read_text(encoding="utf-8")


def test_sse_reconnect_with_last_event_id_loses_nothing(server: Server) -> None:
    rows = lines(40, "流")
    r = server.client.post("/api/runs", files={"input": ("流.jsonl", jsonl(rows).encode())})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    path = f"/api/runs/{run_id}/events"
    first, last = sse(server.client, path, stop_after=5)  # then the client goes away
    assert last is not None
    rest, _ = sse(server.client, path, last_id=last)
    keys = [e["key"] for k, e in first + rest if k == "task"]
    assert sorted(keys) == sorted(x["id"] for x in rows)  # every task once: none lost
    assert len(keys) == len(set(keys))
    kinds = [k for k, _ in rest]
    assert kinds[-1] == "end"
    assert "counts" in kinds
    assert rest[-2][1]["request_counts"]["completed"] == 40 if rest[-2][0] == "counts" else True
    # a finished run replays whole from the store
    again, _ = sse(server.client, path)
    assert sorted(e["key"] for k, e in again if k == "task") == sorted(keys)


def test_cancel_stops_the_calls_in_flight(server: Server) -> None:
    rows = lines(200, "长")
    r = server.client.post("/api/runs", files={"input": ("长.jsonl", jsonl(rows).encode())})
    run_id = r.json()["id"]
    give_up = time.monotonic() + 60
    running: list[str] = []
    while time.monotonic() < give_up and not running:
        page = server.client.get(f"/api/runs/{run_id}/tasks", params={"state": "running"}).json()
        running = [t["key"] for t in page["tasks"]]
    assert running
    r = server.client.post(f"/api/runs/{run_id}/cancel")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelling"
    d = server.wait(run_id, until=("cancelled",))
    assert d["request_counts"]["completed"] < 200
    tasks = server.client.get(f"/api/runs/{run_id}/tasks", params={"limit": 1000}).json()["tasks"]
    states = [t["state"] for t in tasks]
    assert set(states) <= {"done", "cancelled"}
    # calls that had started were stopped, not left to finish: cancelled after an attempt
    assert any(t["state"] == "cancelled" and t["tries"] >= 1 for t in tasks)


def test_no_token_wrong_token_wrong_host_and_paths_out_start_nothing(server: Server) -> None:
    before = server.run_ids()
    url = server.url
    up = {"input": ("x.jsonl", jsonl(lines(2, "坏")).encode())}
    outside = server.root.parent / "外面.jsonl"
    outside.write_text(jsonl(lines(2, "外")), encoding="utf-8")
    (server.root / "链接.jsonl").symlink_to(outside)
    with httpx.Client(base_url=url, timeout=30) as anon:
        assert anon.post("/api/runs", files=up).status_code == 401
        assert anon.get("/api/runs").status_code == 401
        assert anon.get("/api/runs/r-any/events").status_code == 401
        assert anon.get("/").status_code == 401
        assert anon.get("/healthz").json() == {"ok": True}  # and nothing else
        bad = {"Authorization": "Bearer not-the-token-at-all"}
        assert anon.post("/api/runs", files=up, headers=bad).status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        rebound = {**good, "Host": f"evil.example:{url.rsplit(':', 1)[1]}"}
        assert anon.post("/api/runs", files=up, headers=rebound).status_code == 421
        for site in ("http://evil.example", "http://127.0.0.1:1", "null"):
            other_site = {**good, "Origin": site}  # another port on this machine too
            assert anon.post("/api/runs", files=up, headers=other_site).status_code == 403
        same = {**good, "Origin": url}
        assert anon.get("/api/runs", headers=same).status_code == 200
        for path in ("../../etc/passwd", str(outside), "链接.jsonl"):
            r = anon.post("/api/runs", json={"input_path": path}, headers=good)
            assert r.status_code == 422, r.text
            assert "outside the folder" in r.json()["detail"]
        r = anon.post("/api/runs", json={"canvas": "../../etc/passwd"}, headers=good)
        assert r.status_code == 422
        big = jsonl(lines(1, "大")).encode() * 20_000  # over --max-upload 1MB
        r = anon.post("/api/runs", files={"input": ("大.jsonl", big)}, headers=good)
        assert r.status_code == 413
        chunked = anon.post(  # no Content-Length: counted as it arrives
            "/api/runs",
            content=(big[i : i + 65536] for i in range(0, len(big), 65536)),
            headers={**good, "Content-Type": "application/json"},
        )
        assert chunked.status_code == 413
        # the URL token becomes an HttpOnly SameSite=Strict cookie that then suffices
        r = anon.get("/", params={"token": TOKEN})
        assert r.status_code == 200
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert anon.get("/api/runs").status_code == 200
        assert TOKEN not in anon.get("/api/runs").text
    assert server.run_ids() == before


def test_bad_input_is_the_cli_s_message_and_starts_nothing(server: Server) -> None:
    before = server.run_ids()
    bad = server.root / "坏.jsonl"
    bad.write_text('{"id": "a", "prompt": "你好"}\nnot json\n', encoding="utf-8")
    r = server.client.post(
        "/api/runs",
        files={"input": ("坏.jsonl", bad.read_bytes())},
        data={"options": '{"strict": true}'},
    )
    assert r.status_code == 422
    assert "line 2" in r.json()["detail"]
    # every line bad: refused whole even without strict, each line named (as the CLI does)
    r = server.client.post(
        "/api/runs", files={"input": ("全坏.jsonl", '{"prompt": "没有编号"}\n{坏\n'.encode())}
    )
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "'全坏.jsonl': every line is bad (2 of 2): nothing was run" in detail
    assert 'line 1: missing "id"' in detail
    assert "line 2: not valid JSON" in detail
    empty = server.client.post("/api/runs", files={"input": ("空.jsonl", b"")})
    assert empty.status_code == 422
    assert "'空.jsonl': has no request lines" in empty.json()["detail"]
    r = server.client.post("/api/runs", json={"input_path": "没有.jsonl"})
    assert r.status_code == 422
    # the CLI's words for it (batch/parse.py), with the path as the server resolved it
    assert r.json()["detail"] == f"{server.root / '没有.jsonl'}: no such file"
    r = server.client.post(
        "/api/runs", json={"canvas": "库/离散数学.canvas", "agents": ["没有这个"]}
    )
    assert r.status_code == 422
    assert server.run_ids() == before


def test_a_cli_run_of_another_process_shows_and_streams(
    server: Server, work: Path, sim_url: str
) -> None:
    src = work / "另一个.jsonl"
    src.write_text(jsonl(lines(20, "外部")), encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "batch", str(src), "-o", str(work / "另一个-out.jsonl"),
         *via_sim(sim_url), "--no-progress", "--concurrency", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_env(work / "home"), cwd=ROOT,
    )  # fmt: skip
    try:
        before = server.run_ids()
        found: dict[str, Any] | None = None
        give_up = time.monotonic() + 60
        while found is None and time.monotonic() < give_up:
            for x in server.client.get("/api/runs").json()["runs"]:
                if x["owner"] == "other" and x["request_counts"]["total"] == 20:
                    found = x
        assert found is not None, before
        events, _ = sse(server.client, f"/api/runs/{found['id']}/events")
        assert sorted(e["key"] for k, e in events if k == "task") == [
            f"外部-{i:03d}" for i in range(20)
        ]
        assert events[-1][0] == "end"
        r = server.client.post(f"/api/runs/{found['id']}/cancel")
        assert r.status_code == 409  # read-only here
    finally:
        proc.communicate(timeout=120)
    assert proc.returncode == 0


def test_settings_and_metrics(server: Server) -> None:
    s = server.client.get("/api/settings").json()
    assert s["max_concurrency"] == 4
    r = server.client.patch("/api/settings", json={"concurrency": 99})
    assert r.status_code == 422
    assert "from 1 to 4" in r.json()["detail"]
    r = server.client.patch("/api/settings", json={"concurrency": 3})
    assert r.status_code == 200
    assert r.json()["concurrency"] == 3
    server.client.patch("/api/settings", json={"concurrency": 4})
    m = server.client.get("/metrics").text
    assert "fanout_concurrency 4" in m
    assert 'fanout_runs{status="done"}' in m
    openapi = server.client.get("/openapi.json").json()
    assert "/api/runs/{run_id}/events" in openapi["paths"]


def test_timeline_and_task_cancel_of_a_finished_run(server: Server) -> None:
    r = server.client.post(
        "/api/runs", files={"input": ("图.jsonl", jsonl(lines(8, "图")).encode())}
    )
    run_id = r.json()["id"]
    server.wait(run_id)
    tl = server.client.get(f"/api/runs/{run_id}/timeline").json()
    assert tl["run"] == run_id
    assert tl["attempts"] == 8  # the --html report's model: every attempt
    none = server.client.get(f"/api/runs/{run_id}/timeline", params={"t0": 1e6}).json()
    assert len(none["bars"]["s"]) == 0 < len(tl["bars"]["s"])  # a window past the end
    r = server.client.post(f"/api/runs/{run_id}/tasks/图-001/cancel")
    assert r.status_code == 409  # the run is over: nothing to cancel
    assert server.client.get(f"/api/runs/{run_id}/tasks/没有").status_code == 404
    assert server.client.get("/api/runs/r-没有这个").status_code == 404
