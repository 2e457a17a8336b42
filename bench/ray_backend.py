"""The Ray backend against the local backend, on this machine: three figures.

1. per-attempt cost: 2,000 zero-latency simulator calls at concurrency 64, each backend;
2. I/O-bound: 1,000 calls of 200 ms at concurrency 64, wall Ray / local (target <= 1.05);
3. CPU-bound: 200 Python agent calls of ~50 ms CPU each (`cpu=True`), local (threads in
   one process) against Ray with 2 CPUs (a long-lived actor per CPU): local / Ray
   (target >= 1.8); and, as its ceiling under the machine's load at that moment, the same
   CPU work with no fanout: one thread against one plain Ray task per CPU.

With no `--address` it starts a head of its own (`ray start --head --num-cpus 2`, in a
temp dir of its own, its workers at nice 0 like this process rather than Ray's default
15) and stops exactly the processes it started at the end.

    .venv/bin/python bench/ray_backend.py [--address HOST:PORT]
    .venv/bin/python bench/ray_backend.py --cpu-split [--runs 3]

`--cpu-split` runs only the CPU-bound calls on Ray (on a head of its own) and prints where
the CPU went while they ran: the driver, each Ray worker, the raylet, the GCS, Ray's other
daemons, in CPU seconds read from the kernel (utime + stime), so a busy shared machine
changes little. A worker's CPU beyond the spins it ran (calls x CPU_S) is its overhead.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fanout.backends.ray import RayBackend
from fanout.engine.engine import Engine
from fanout.providers.base import CallableProvider, Provider, Request
from fanout.providers.sim import SimConfig, SimProvider
from fanout.tasks import Task, TaskState

CPU_S = 0.05


def spin() -> int:
    """About CPU_S of pure-Python CPU work (holds the GIL, as a parser or a local model's
    Python glue would)."""
    end = time.thread_time() + CPU_S  # this thread's CPU: threads share the process's
    n = 0
    while time.thread_time() < end:
        n += 1
    return n


def burn(request: Request) -> str:
    return f"{spin()} {request.prompt_text()[:20]}"


def spins(k: int) -> int:
    return sum(spin() for _ in range(k))


def bare_ceiling(calls: int) -> tuple[float, float]:
    """The same CPU work without fanout, in the same run: (seconds for `calls` spins in
    this thread, seconds for them split over one plain Ray task per CPU, its worker
    processes started beforehand). Their ratio is what two cores give under this load,
    after Ray's own daemons and the machine's other work take their share."""
    import ray

    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    task = ray.remote(spins).options(num_cpus=1, max_retries=0)
    ray.get([task.remote(0) for _ in range(cpus)])  # the workers up and warm
    t0 = time.perf_counter()
    spins(calls)
    t1 = time.perf_counter()
    ray.get([task.remote(calls // cpus) for _ in range(cpus)])
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pids(mark: str) -> set[int]:
    parents: dict[int, int] = {}
    mine: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rpartition(")")[2].split()[1])
        if mark.encode() in cmdline:
            mine.add(int(entry.name))
    while kids := {p for p, pp in parents.items() if pp in mine and p not in mine}:
        mine |= kids
    mine.discard(os.getpid())
    return mine


def _cpu_s(pid: int) -> float:
    """utime + stime of process `pid` (all its threads), in seconds; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _role(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return "gone"
    text = b" ".join(cmd).decode(errors="replace")
    if "ProviderHost" in text or "CpuHost" in text:
        return "actor"
    for name in ("gcs_server", "raylet", "default_worker", "dashboard", "runtime_env"):
        if name in text:
            return {"default_worker": "idle worker"}.get(name, name)
    return "other"


class CpuSplit:
    """CPU seconds per process of the head started in `root`, and of this driver, between
    `start()` and `stop()`: the processes alive at `stop()` (an actor's worker starts
    before the run and is read before the engine kills it)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._before: dict[int, float] = {}
        self._driver = 0.0
        self.split: dict[str, float] = {}
        self.actors: list[float] = []

    @staticmethod
    def _self_s() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    def start(self) -> None:
        self._before = {pid: _cpu_s(pid) for pid in _pids(self.root)}
        self._driver = self._self_s()

    def stop(self) -> None:
        driver = self._self_s() - self._driver
        split: dict[str, float] = {"driver": driver}
        actors = []
        for pid in _pids(self.root):
            used = _cpu_s(pid) - self._before.get(pid, 0.0)
            role = _role(pid)
            split[role] = split.get(role, 0.0) + used
            if role == "actor":
                actors.append(used)
        self.split, self.actors = split, sorted(actors)


@contextlib.contextmanager
def local_head(roots: list[str] | None = None) -> Iterator[str]:
    """A head of our own on loopback with 2 CPUs; its processes killed at the end."""
    root = tempfile.mkdtemp(prefix="fb", dir="/tmp")
    if roots is not None:
        roots.append(root)
    port = free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    cmd = [ray, "start", "--head", "--port", str(port), "--num-cpus", "2"]
    cmd += ["--temp-dir", root, "--node-ip-address", "127.0.0.1", "--disable-usage-stats"]
    cmd += ["--include-dashboard", "false", "--dashboard-port", str(free_port())]
    cmd += ["--object-store-memory", "100000000"]
    for flag in ("--node-manager-port", "--object-manager-port", "--metrics-export-port"):
        cmd += [flag, str(free_port())]
    for flag in ("--runtime-env-agent-port", "--dashboard-agent-listen-port"):
        cmd += [flag, str(free_port())]
    cmd += ["--dashboard-agent-grpc-port", str(free_port())]
    # Ray starts its workers at nice 15: on a machine shared with other work they get
    # what is left, while the local run competes at nice 0. The same footing for both.
    env = {**os.environ, "RAY_worker_niceness": "0"}
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=180, env=env)
        yield f"127.0.0.1:{port}"
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in _pids(root):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            time.sleep(1.0)
        shutil.rmtree(root, ignore_errors=True)


async def timed(
    provider: Provider,
    n: int,
    concurrency: int,
    backend: RayBackend | None,
    split: CpuSplit | None = None,
) -> tuple[float, float]:
    """(seconds the engine took to start, seconds for the n calls)."""
    tasks = [Task(key=f"t{i}", prompt=f"第 {i} 个问题 question {i}") for i in range(n)]
    t0 = time.perf_counter()
    async with Engine(
        providers=provider, backend=backend, concurrency=concurrency, timeout=None
    ) as engine:
        t1 = time.perf_counter()
        if split:
            split.start()
        run = await engine.run(tasks)
        t2 = time.perf_counter()
        if split:
            split.stop()
        states = {r.state for r in await run.results()}
    assert states == {TaskState.DONE}, states
    return t1 - t0, t2 - t1


def sim(latency_s: float) -> SimProvider:
    return SimProvider(SimConfig(seed=1, base_latency_s=latency_s, jitter=0.0))


async def measure(address: str, calls: int, io_calls: int, cpu_calls: int) -> dict[str, Any]:
    f: dict[str, Any] = {}
    # 1. per-attempt cost, zero latency
    _, local = await timed(sim(0.0), calls, 64, None)
    start, ray = await timed(sim(0.0), calls, 64, RayBackend(address))
    f["zero_latency_calls"] = calls
    f["local_us_per_call"] = round(local / calls * 1e6, 1)
    f["ray_us_per_call"] = round(ray / calls * 1e6, 1)
    f["ray_overhead_us_per_call"] = round((ray - local) / calls * 1e6, 1)
    f["local_calls_per_s"] = round(calls / local)
    f["ray_calls_per_s"] = round(calls / ray)
    f["ray_start_s"] = round(start, 2)
    # 2. I/O-bound: 200 ms calls at concurrency 64
    _, local = await timed(sim(0.2), io_calls, 64, None)
    _, ray = await timed(sim(0.2), io_calls, 64, RayBackend(address))
    f["io_calls"] = io_calls
    f["io_local_s"] = round(local, 2)
    f["io_ray_s"] = round(ray, 2)
    f["io_ray_over_local"] = round(ray / local, 3)
    # 3. CPU-bound: ~50 ms of CPU per call
    cpu = CallableProvider(burn, name="burn", cpu=True)
    _, local = await timed(cpu, cpu_calls, 8, None)
    _, ray = await timed(cpu, cpu_calls, 8, RayBackend(address))
    f["cpu_calls"] = cpu_calls
    f["cpu_local_s"] = round(local, 2)
    f["cpu_ray_s"] = round(ray, 2)
    f["cpu_speedup"] = round(local / ray, 2)
    bare_local, bare_ray = bare_ceiling(cpu_calls)
    f["bare_local_s"] = round(bare_local, 2)
    f["bare_ray_s"] = round(bare_ray, 2)
    f["bare_ray_speedup"] = round(bare_local / bare_ray, 2)
    return f


async def cpu_split(address: str, root: str, calls: int, runs: int) -> list[dict[str, Any]]:
    """The CPU-bound calls on Ray `runs` times, each with the CPU of every process."""
    out = []
    cpu = CallableProvider(burn, name="burn", cpu=True)
    for _ in range(runs):
        split = CpuSplit(root)
        backend = RayBackend(address)
        _, wall = await timed(cpu, calls, 8, backend, split)
        spun = calls * CPU_S
        actors = sum(split.actors)
        f: dict[str, Any] = {"wall_s": round(wall, 2), "batches": backend.batches}
        f["ray_calls"] = getattr(backend, "calls", None)  # None before it was counted
        f |= {k: round(v, 2) for k, v in sorted(split.split.items())}
        f["actors_each"] = [round(x, 2) for x in split.actors]
        f["actors_over_spin_s"] = round(actors - spun, 3)
        f["nonspin_ms_per_call"] = round((sum(split.split.values()) - spun) / calls * 1e3, 2)
        f["loadavg"] = round(os.getloadavg()[0], 2)
        out.append(f)
    return out


def _autogroup() -> bool | None:
    """Whether Linux shares the CPU between sessions rather than processes: then, with
    other sessions busy, this one's share is the same however many processes it runs."""
    try:
        return Path("/proc/sys/kernel/sched_autogroup_enabled").read_text().strip() == "1"
    except OSError:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--address", help="an existing cluster's head (default: start one)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--io-calls", type=int, default=1000)
    ap.add_argument("--cpu-calls", type=int, default=200)
    ap.add_argument("--cpu-split", action="store_true", help="only the CPU split (see above)")
    ap.add_argument("--runs", type=int, default=3, help="runs of --cpu-split")
    a = ap.parse_args()
    if a.cpu_split:
        roots: list[str] = []
        with local_head(roots) as address:
            import ray

            ray.init(address=address, logging_level="ERROR", log_to_driver=False)
            try:
                rows = asyncio.run(cpu_split(address, roots[0], a.cpu_calls, a.runs))
            finally:
                ray.shutdown()
        for row in rows:
            print(json.dumps(row))
        return
    load = os.getloadavg()
    with contextlib.ExitStack() as stack:
        address = a.address or stack.enter_context(local_head())
        import ray

        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        try:
            figures = asyncio.run(measure(address, a.calls, a.io_calls, a.cpu_calls))
        finally:
            ray.shutdown()
    figures["loadavg_before"] = [round(x, 2) for x in load]
    figures["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    figures["cpus"] = os.cpu_count()
    figures["sched_autogroup"] = _autogroup()
    print(
        f"per call, zero latency: local {figures['local_us_per_call']} us, "
        f"ray {figures['ray_us_per_call']} us (+{figures['ray_overhead_us_per_call']} us)"
    )
    print(
        f"{a.io_calls} x 200 ms at 64: local {figures['io_local_s']} s, ray "
        f"{figures['io_ray_s']} s ({figures['io_ray_over_local']} x; target <= 1.05)"
    )
    print(
        f"{a.cpu_calls} x {CPU_S * 1000:.0f} ms CPU: local {figures['cpu_local_s']} s, ray "
        f"{figures['cpu_ray_s']} s ({figures['cpu_speedup']} x faster; target >= 1.8)"
    )
    print(
        f"the same CPU work without fanout: one thread {figures['bare_local_s']} s, a plain "
        f"Ray task per CPU {figures['bare_ray_s']} s ({figures['bare_ray_speedup']} x: what "
        "this machine's cores give Ray now)"
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
