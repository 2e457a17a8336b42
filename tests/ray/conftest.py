"""One real local Ray cluster for every test here: a head (`ray start --head`, 2 CPUs) and a
second worker node on the same machine, on free loopback ports, in a short temp dir of its
own. Stopped at the end, even on failure, by killing exactly the processes it started (the
ones whose command line names its temp dir, and their children): never `ray stop`, which
would stop every Ray on the machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'fanout[ray]')")

RAY = str(Path(sys.executable).with_name("ray"))
OBJECT_STORE_BYTES = "100000000"
START_TIMEOUT_S = 120
#: a lost node is noticed in about 10 s, not the default half a minute (the node-loss
#: test); not quicker: on a loaded machine a live node's late heartbeats would be taken for
#: its death
HEALTH_CHECKS = json.dumps(
    {"health_check_period_ms": 2000, "health_check_timeout_ms": 5000,
     "health_check_failure_threshold": 5}
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first test here also pays for starting the cluster (20 to 50 s on a loaded
    machine): the suite's 120 s default would cut a correct run short."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.timeout(300))


@dataclass
class Node:
    temp_dir: Path

    def pids(self) -> set[int]:
        """Every process of this node: those naming its temp dir, and their descendants."""
        mark = str(self.temp_dir).encode()
        parents: dict[int, int] = {}
        mine: set[int] = set()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                cmdline = (entry / "cmdline").read_bytes()
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[pid] = int(stat.rpartition(")")[2].split()[1])
            if mark in cmdline:
                mine.add(pid)
        grew = True
        while grew:
            kids = {p for p, pp in parents.items() if pp in mine and p not in mine}
            grew = bool(kids)
            mine |= kids
        mine.discard(os.getpid())
        return mine

    def kill(self, sig: int = signal.SIGKILL) -> None:
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def stop(self) -> None:
        """At once: the run is over and its temp dir goes next, nothing to wait for (the
        object store's shared memory goes with its processes)."""
        self.kill(signal.SIGKILL)


@dataclass
class Cluster:
    address: str
    head: Node
    worker: Node
    env: dict[str, str]

    def add_worker(self) -> None:
        """(Re)start the second node after a test stopped it."""
        _start(["--address", self.address, "--num-cpus", "1"], self.worker, self.env)
        _wait_nodes(self.address, 2)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ports() -> list[str]:
    """Every port a node listens on, picked free, so two clusters on one machine never meet."""
    return [
        "--node-manager-port", str(free_port()),
        "--object-manager-port", str(free_port()),
        "--metrics-export-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()),
    ]  # fmt: skip


def _start(args: list[str], node: Node, env: dict[str, str]) -> None:
    _started(_begin(args, node, env))


def _begin(args: list[str], node: Node, env: dict[str, str]) -> subprocess.Popen[str]:
    """`ray start` for `node`, under way (the worker logs stay on the node: no log monitor,
    the drivers here do not print them)."""
    node.temp_dir.mkdir(parents=True, exist_ok=True)
    cmd = [RAY, "start", *args, "--temp-dir", str(node.temp_dir), *_ports()]
    cmd += ["--node-ip-address", "127.0.0.1", "--object-store-memory", OBJECT_STORE_BYTES]
    cmd += ["--disable-usage-stats", "--include-log-monitor", "false"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _started(proc: subprocess.Popen[str]) -> None:
    try:
        out, err = proc.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"ray start failed: {out[-2000:]} {err[-2000:]}")


def _wait_nodes(address: str, n: int) -> None:
    import ray

    give_up = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < give_up:
        if sum(1 for x in ray.nodes() if x.get("Alive")) >= n:
            return
        time.sleep(0.2)
    raise RuntimeError(f"the Ray cluster at {address} has not got {n} nodes")


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Cluster]:
    import ray

    # short: Ray's socket paths must stay under 107 characters
    root = Path(tempfile.mkdtemp(prefix="fr", dir="/tmp"))
    # workers at nice 0, not Ray's default 15: beside the rest of the suite they would get
    # only what it leaves, and crawl
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_worker_niceness": "0"}
    port = free_port()
    head, worker = Node(root / "h"), Node(root / "w")
    cluster = Cluster(f"127.0.0.1:{port}", head, worker, env)
    try:
        _start(
            ["--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard", "false",
             "--dashboard-port", str(free_port()), "--system-config", HEALTH_CHECKS],
            head,
            env,
        )  # fmt: skip
        second = _begin(["--address", cluster.address, "--num-cpus", "1"], worker, env)
        # this process is a driver of the cluster for the in-process tests (the backends
        # find it connected and share it): connected while the second node starts
        ray.init(
            address=cluster.address,
            namespace="fanout",
            logging_level="ERROR",
            log_to_driver=False,
            configure_logging=False,
        )
        _started(second)
        _wait_nodes(cluster.address, 2)
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        worker.stop()
        head.stop()
        shutil.rmtree(root, ignore_errors=True)
