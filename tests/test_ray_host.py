"""The provider host the Ray backend runs on each worker (`backends/ray_host.py`), driven
directly: it imports nothing of Ray, so its batching is tested without a cluster."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fanout.backends import ray_host
from fanout.backends.ray_host import ProviderHost, Recipe
from fanout.providers.base import Request

#: the calls under way at once in `work` (the CPU host must run one at a time)
RUNNING: list[int] = [0, 0]
_LOCK = threading.Lock()
#: `hold` returns when this is set; it sets STARTED when its thread runs
RELEASE = threading.Event()
STARTED = threading.Event()


def ask(text: str) -> Request:
    return Request(model="m", messages=[{"role": "user", "content": text}])


def work(request: Request) -> str:
    """A CPU-bound agent's call, as the host runs it: in a thread, ~30 ms."""
    with _LOCK:
        RUNNING[0] += 1
        RUNNING[1] = max(RUNNING[1], RUNNING[0])
    time.sleep(0.03)
    with _LOCK:
        RUNNING[0] -= 1
    return f"答：{request.prompt_text()}"


def hold(request: Request) -> str:
    """`work`, but a call not on the first question ends only when the test says so."""
    with _LOCK:
        RUNNING[0] += 1
        RUNNING[1] = max(RUNNING[1], RUNNING[0])
    STARTED.set()
    try:
        if request.prompt_text() != "一":
            RELEASE.wait(30.0)
        else:
            time.sleep(0.03)
    finally:
        with _LOCK:
            RUNNING[0] -= 1
    return f"答：{request.prompt_text()}"


def cpu_host() -> ProviderHost:
    return ProviderHost([Recipe("work", 4, cpu=f"{__name__}:work")], cpu=True)


async def polls_until(host: ProviderHost, n: int) -> list[int]:
    """The size of each poll's answer until `n` outcomes came back."""
    sizes: list[int] = []
    while sum(sizes) < n:
        done = await host.poll(10.0)
        assert all(err is None for _, (_, err) in done), done
        sizes.append(len(done))
    return sizes


def test_a_cpu_host_answers_in_pairs_while_its_queue_keeps_the_cpu_busy() -> None:
    """Eight calls queued on one CPU host: outcomes come back several at a time while calls
    remain queued, so the driver pays a poll and a submit per few calls, not one of each per
    call; the calls still run one at a time."""

    async def main() -> list[int]:
        host = cpu_host()
        assert await host.ping() == []
        await host.submit([(k, "work", ask(f"问题 {k}")) for k in range(8)])
        return await polls_until(host, 8)

    RUNNING[:] = [0, 0]
    sizes = asyncio.run(main())
    assert RUNNING[1] == 1
    # held until as many are done as remain to run (bar the running one): 4, 2, then the
    # last two one by one, as nothing queued behind them keeps the CPU busy
    assert sizes[0] >= 2, sizes
    assert len(sizes) <= 5, sizes  # answered one by one it would be eight polls


def test_a_cpu_host_answers_at_once_when_nothing_else_would_keep_its_cpu_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the call finished and at most one more to run here, nothing is held: the driver
    must hear now, to send the next calls before the CPU idles. The second call here runs
    until the test ends it and the hold is made far longer than the test waits, so a host
    that held this outcome would time the first poll out."""
    monkeypatch.setattr(ray_host, "CPU_HOLD_S", 60.0)
    RELEASE.clear()

    async def main() -> list[int]:
        host = ProviderHost([Recipe("hold", 4, cpu=f"{__name__}:hold")], cpu=True)
        await host.submit([(0, "hold", ask("一")), (1, "hold", ask("二"))])
        try:
            first = await asyncio.wait_for(host.poll(60.0), 20.0)
        finally:
            RELEASE.set()
        return [len(first), *await polls_until(host, 1)]

    assert asyncio.run(main()) == [1, 1]


def test_an_io_host_answers_each_outcome_as_soon_as_it_is_done() -> None:
    async def main() -> list[int]:
        host = ProviderHost([Recipe("work", 4, cpu=f"{__name__}:work")], cpu=False)
        await host.submit([(0, "work", ask("一"))])
        return await polls_until(host, 1)

    assert asyncio.run(main()) == [1]


def test_a_cancelled_cpu_call_keeps_its_cpu_until_its_thread_returns() -> None:
    """A thread cannot be stopped: a call the driver cancelled (its attempt timed out) runs
    on, so the next call on this CPU host starts only when it returns, never beside it."""
    RELEASE.clear()
    STARTED.clear()
    RUNNING[:] = [0, 0]

    async def main() -> list[int]:
        host = ProviderHost([Recipe("hold", 4, cpu=f"{__name__}:hold")], cpu=True)
        await host.submit([(0, "hold", ask("卡住"))])
        assert await asyncio.to_thread(STARTED.wait, 20.0)  # the held call is in its thread
        await host.cancel([0])
        await host.submit([(1, "hold", ask("一"))])
        for _ in range(30):  # time for the second call to start, were it let
            await asyncio.sleep(0.01)
        started_early = RUNNING[1]
        RELEASE.set()
        sizes = await polls_until(host, 1)
        return [started_early, *sizes]

    started_early, *sizes = asyncio.run(main())
    assert started_early == 1, "the second call ran beside the cancelled one"
    assert RUNNING[1] == 1
    assert sizes == [1]  # the cancelled call's outcome never comes back
