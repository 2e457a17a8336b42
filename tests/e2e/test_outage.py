"""A provider outage in the middle of a run, with the default retry policy: the sim-server is
killed with SIGKILL and started again later on the same port. Every task must end done, the
retry budget must not be spent on calls that never reached the server, and while it was down
the engine may send only the calls in flight then, the row of failures that opens the
circuit, and its probes.

A two-second outage runs with the real circuit timings; a long one (standing in for minutes)
runs with the probe interval capped shorter, so the suite stays quick while the probes still
reach their cap many times over.
"""

from __future__ import annotations

import asyncio
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from fanout import Engine, RetryPolicy, TaskState
from fanout.engine import limits
from fanout.engine.events import ProviderDown, ProviderUp

from .test_http_engine import MODEL, Sent, SimProcess, Timeline, adapters, make_tasks, sim_server

pytestmark = pytest.mark.e2e


class SendTimes(Sent):
    """Also the time of every request sent (the hook runs before the connection is made, so
    a request refused by a dead server counts too)."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def _on_request(self, request: object) -> None:
        self.times.append(time.monotonic())
        await super()._on_request(request)


@dataclass
class Outage:
    while_down: int  # requests sent while the server was down
    retries: int  # what the run's retry budget was charged
    down: list[ProviderDown]
    up: list[ProviderUp]


async def outage_run(server: SimProcess, n: int, down_s: float) -> Outage:
    concurrency = 16
    sent, timeline = SendTimes(), Timeline()
    marks: dict[str, float] = {}
    async with Engine(
        providers=adapters(server.url, concurrency, sent),
        model=MODEL,
        concurrency=concurrency,
        retry=RetryPolicy(),  # the default: 3 attempts, a budget of half the tasks
        seed=3,
    ) as engine:
        run = engine.submit(make_tasks(n, "outage"))
        run.listen(timeline)
        while len(timeline.done_at) < n // 4:
            timeline.finished.clear()
            await timeline.finished.wait()
        marks["stop"] = time.monotonic()
        await server.stop(signal.SIGKILL)
        await asyncio.sleep(down_s)
        marks["back"] = time.monotonic()
        await server.start()
        metrics = await run.wait()
        results = await run.results()
    failed = [r.error.message for r in results if r.error is not None]
    assert failed == [], failed[:3]
    assert metrics["done"] == n
    assert all(t.state is TaskState.DONE for t in run.tasks)
    while_down = [t for t in sent.times if marks["stop"] <= t < marks["back"]]
    return Outage(len(while_down), run.retries, timeline.of(ProviderDown), timeline.of(ProviderUp))


def test_a_two_second_outage_fails_no_task(tmp_path: Path) -> None:
    async def main() -> None:
        async with sim_server(tmp_path, "--latency", "20ms") as server:
            out = await outage_run(server, 600, 2.0)
        # two adapters (openai and anthropic wire formats), so two circuits
        assert {e.key for e in out.down} == {"openai:sim-1", "anthropic:sim-1"}
        assert len(out.up) == 2
        # in flight at the kill (16), the rows that open both circuits (2 x 10), then probes
        # at 0.25-0.5 s, 0.5-1 s, 1-2 s: at most 3 each in 2 s
        assert out.while_down <= 16 + 2 * limits.CIRCUIT_FAILURES + 2 * 4
        assert out.retries <= 16 + 2 * limits.CIRCUIT_FAILURES  # refused calls cost none

    asyncio.run(main())


def test_a_long_outage_fails_no_task_and_probes_stay_rare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(limits, "CIRCUIT_PROBE_CAP_S", 0.5)  # minutes, scaled down

    async def main() -> None:
        async with sim_server(tmp_path, "--latency", "20ms") as server:
            out = await outage_run(server, 400, 6.0)
        # probes: at most one per 0.25 s (the capped interval's jitter floor) per circuit
        probes_max = 2 * (6.0 / 0.25 + 1)
        assert out.while_down <= 16 + 2 * limits.CIRCUIT_FAILURES + probes_max

    asyncio.run(main())
