"""`fanout batch` and `fanout canvas run` with `--backend ray`, as a user runs them: the
same output as the local backend, limits held for the whole cluster. (The flags' errors,
which need no cluster, are in tests/cli/test_backend_flags.py.)"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.test_cli_batch import ROOT, fanout, read_jsonl, write_jsonl
from tests.ray.conftest import Cluster

pytestmark = pytest.mark.e2e


def home(tmp_path: Path) -> dict[str, str]:
    return {"FANOUT_HOME": str(tmp_path / "home")}


def answers(path: Path) -> list[tuple[Any, ...]]:
    """What a batch output says, without what differs between any two runs (ids, times)."""
    out = []
    for row in read_jsonl(path):
        body = (row.get("response") or {}).get("body") or {}
        choice = (body.get("choices") or [{}])[0]
        content = (choice.get("message") or {}).get("content")
        out.append((row["custom_id"], content, choice.get("finish_reason"), body.get("usage")))
    return out


def test_batch_on_ray_writes_what_the_local_backend_writes(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    src = write_jsonl(
        tmp_path / "题目.jsonl",
        [{"id": f"题{i}", "prompt": f"用一句话解释第 {i} 条定理"} for i in range(30)],
    )
    common = [
        "--seed",
        "5",
        "--sim-faults",
        "500=0.2",
        "--attempts",
        "8",
        "--sim-latency",
        "5ms",
        "--json",
    ]
    common += ["--no-progress", "--concurrency", "8", "--no-cache"]  # answered, not cached
    local = fanout("batch", src, "-o", tmp_path / "本地.jsonl", *common, env=home(tmp_path))
    assert local.returncode == 0, local.stderr
    ray = fanout(
        "batch", src, "-o", tmp_path / "集群.jsonl", *common,
        "--backend", "ray", "--ray-address", ray_cluster.address,
        env=home(tmp_path),
    )  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    assert answers(tmp_path / "集群.jsonl") == answers(tmp_path / "本地.jsonl")
    summary = json.loads(ray.stdout.strip().splitlines()[-1])
    assert summary["done"] == 30
    assert summary["retries"] > 0  # the injected faults were retried, by the engine alone


def _notes(vault: Path) -> dict[str, str]:
    return {
        str(p.relative_to(vault)): p.read_text(encoding="utf-8")
        for p in sorted(vault.rglob("*.md"))
    }


def test_canvas_run_on_ray_writes_what_the_local_backend_writes(
    ray_cluster: Cluster, tmp_path: Path
) -> None:
    vaults = []
    for name in ("本地", "集群"):
        dst = tmp_path / name / "笔记库"
        shutil.copytree(ROOT / "examples" / "vault", dst)
        vaults.append(dst)
    args = ["--agents", "oral-explanation,memory-anchor", "--json", "--sim-latency", "1ms"]
    args += ["--no-cache"]  # both answered, not one from the other's cache
    local = fanout("canvas", "run", vaults[0] / "离散数学.canvas", *args, env=home(tmp_path))
    assert local.returncode == 0, local.stderr
    ray = fanout(
        "canvas", "run", vaults[1] / "离散数学.canvas", *args,
        "--backend", "ray", "--ray-address", ray_cluster.address,
        env=home(tmp_path),
    )  # fmt: skip
    assert ray.returncode == 0, ray.stderr
    assert json.loads(ray.stdout.strip().splitlines()[-1])["done"] == 8
    assert _notes(vaults[1]) == _notes(vaults[0])
    assert len(_notes(vaults[1])) > len(_notes(ROOT / "examples" / "vault"))


@pytest.fixture
def limited_server(tmp_path: Path) -> Iterator[str]:
    """A sim-server that answers 429 past 8 requests in any 4 s (120 a minute, a sliding
    window), without rate headers: the budget the driver keeps is the one it is given."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanout", "sim-server", "--port", "0", "--rpm", "120",
         "--limit-shape", "sliding", "--limit-window", "4", "--latency", "20ms",
         "--no-rate-headers"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )  # fmt: skip
    assert proc.stdout is not None
    m = re.search(r"http://127\.0\.0\.1:(\d+)", proc.stdout.readline())
    if m is None:
        proc.kill()
        raise RuntimeError(f"the sim-server did not start: {proc.communicate()}")
    try:
        yield f"http://127.0.0.1:{m.group(1)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_the_rpm_budget_holds_for_the_whole_cluster(
    ray_cluster: Cluster, limited_server: str, tmp_path: Path
) -> None:
    from tests.benches import bench_module

    src = write_jsonl(
        tmp_path / "in.jsonl", [{"id": f"q{i}", "prompt": f"问题 {i}"} for i in range(10)]
    )
    p = fanout(
        "batch", src, "-o", tmp_path / "out.jsonl", "--provider", "openai",
        "--base-url", limited_server + "/v1", "--rpm", "60", "--concurrency", "10",
        "--no-cache", "--no-progress", "--json",
        "--backend", "ray", "--ray-address", ray_cluster.address,
        env=home(tmp_path),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    stats = bench_module("crash").server_stats(limited_server)
    assert stats["completed_total"] == 10
    # the driver paces the whole cluster at 60 a minute: the server never sees more than
    # its 8 in any 4 s (calls reach it with the cluster's dispatch jitter, a few at once at
    # worst), where 10 sent at once would have 2 refused
    assert stats["rejected_429"] == 0
    assert stats["requests_total"] == 10
