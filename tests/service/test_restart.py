"""A SIGKILLed `fanout serve`, started again on the same store, resumes the runs it owned:
every task ends with one result, and no request committed before the kill is answered
again (the sim-server counts its answers per request body)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.benches import bench_module
from tests.service.conftest import Server, clean_env, jsonl, via_sim

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Slower calls than the other module's: the kill must come while calls are out."""
    work = tmp_path_factory.mktemp("sim")
    with bench_module("crash").sim_server(work, "250ms", clean_env(work)) as url:
        yield url


@pytest.mark.timeout(300)
def test_sigkill_then_restart_resumes_and_answers_nothing_twice(
    tmp_path: Path, sim_url: str
) -> None:
    crash = bench_module("crash")
    root, home = tmp_path / "根", tmp_path / "home"
    root.mkdir()
    args = [*via_sim(sim_url), "--concurrency", "2"]
    rows = [{"id": f"重启-{i:02d}", "prompt": f"第{i}题：重启之后不要再答一次"} for i in range(24)]
    first = Server(root, home, args).start()
    r = first.client.post("/api/runs", files={"input": ("重启.jsonl", jsonl(rows).encode())})
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    give_up = time.monotonic() + 60
    while first.run(run_id)["request_counts"]["completed"] < 4:  # some done, calls out
        assert time.monotonic() < give_up
        time.sleep(0.05)
    first.kill()
    at_kill = crash.settled_stats(sim_url)
    committed = crash.committed(home / "fanout.db", run_id)
    assert 4 <= len(committed) < 24

    second = Server(root, home, args).start()
    try:
        d = second.wait(run_id)
        assert d["request_counts"] == {
            "total": 24, "completed": 24, "failed": 0, "skipped": 0, "cancelled": 0,
        }  # fmt: skip
        assert d["owner"] == "server"
        final = crash.settled_stats(sim_url)
        lines = second.client.get(f"/api/runs/{run_id}/results").text.splitlines()
        assert len(lines) == 24
    finally:
        err = second.stop()
    assert f"resumed run {run_id}" in err
    for h in committed:  # committed before the kill: never asked for again
        assert final[h] == at_kill[h] == 1
    # answered by the killed server but not committed: the only ones that may be twice
    assert sum(final.values()) - len(final) <= len(set(at_kill) - committed)
