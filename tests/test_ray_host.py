"""The provider hosts the Ray backend runs on its workers (`backends/ray_host.py`), driven
directly: they import nothing of Ray, so their batching is tested without a cluster."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from fanout.backends import ray_host
from fanout.backends.ray_host import CpuHost, Outcome, ProviderHost, Recipe
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


def exits(request: Request) -> str:
    """An agent that calls sys.exit (a script turned into an agent, say) on "退出"."""
    if request.prompt_text() == "退出":
        raise SystemExit(3)
    return work(request)


def cpu_host(fn: str = "work") -> CpuHost:
    return CpuHost([Recipe(fn, 4, cpu=f"{__name__}:{fn}")])


def polls_until(host: CpuHost, n: int) -> list[int]:
    """The size of each poll's answer until `n` outcomes came back."""
    sizes: list[int] = []
    while sum(sizes) < n:
        done = host.poll(10.0)
        assert all(err is None for _, (_, err) in done), done
        sizes.append(len(done))
    return sizes


def test_a_cpu_host_answers_in_batches_while_its_queue_keeps_the_cpu_busy() -> None:
    """Eight calls queued on one CPU host: outcomes come back several at a time while calls
    remain queued, so the driver pays a poll per few calls, not one per call; the calls
    still run one at a time."""
    host = cpu_host()
    assert host.ping() == []
    RUNNING[:] = [0, 0]
    host.submit([(k, "work", ask(f"问题 {k}")) for k in range(8)])
    sizes = polls_until(host, 8)
    assert RUNNING[1] == 1
    assert sizes[0] >= 2, sizes
    assert len(sizes) <= 5, sizes  # answered one by one it would be eight polls


def test_a_cpu_host_holds_outcomes_until_only_the_running_call_is_left(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A queue of four (the bench's 8 places over 2 CPUs): the first answer brings three
    outcomes, sent back while the fourth call runs, not two (a Ray call per two calls).
    The hold's time limit is taken out of play: what is tested is when a host answers."""
    monkeypatch.setattr(ray_host, "CPU_HOLD_S", 60.0)
    host = cpu_host()
    host.submit([(k, "work", ask(f"问题 {k}")) for k in range(4)])
    assert polls_until(host, 4) == [3, 1]


def test_a_cpu_hosts_poll_carries_the_calls_that_refill_its_queue() -> None:
    """The driver's next poll brings the next calls: one Ray call both ways."""
    host = cpu_host()
    host.submit([(0, "work", ask("一")), (1, "work", ask("二"))])
    first = host.poll(10.0, [(2, "work", ask("三"))])
    rest = host.poll(10.0)
    got = {k: c.text for k, (c, _) in first + rest if c is not None}
    assert sorted(got) == [0, 1, 2]
    assert got[2] == "答：三"


def test_a_cpu_host_answers_at_once_when_nothing_else_would_keep_its_cpu_busy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the call finished and at most one more to run here, nothing is held: the driver
    must hear now, to send the next calls before the CPU idles. The second call here runs
    until the test ends it and the hold is made far longer than the test waits, so a host
    that held this outcome would time the first poll out."""
    monkeypatch.setattr(ray_host, "CPU_HOLD_S", 60.0)
    RELEASE.clear()
    host = cpu_host("hold")
    host.submit([(0, "hold", ask("一")), (1, "hold", ask("二"))])
    try:
        first = host.poll(20.0)
    finally:
        RELEASE.set()
    assert [len(first), *polls_until(host, 1)] == [1, 1]


def test_an_io_host_answers_each_outcome_as_soon_as_it_is_done() -> None:
    async def main() -> list[int]:
        host = ProviderHost([Recipe("work", 4, cpu=f"{__name__}:work")])
        await host.submit([(0, "work", ask("一"))])
        done = await host.poll(10.0)
        return [len(done)]

    assert asyncio.run(main()) == [1]


def test_a_cancelled_cpu_call_keeps_its_cpu_until_its_thread_returns() -> None:
    """A thread cannot be stopped: a call the driver cancelled (its attempt timed out) runs
    on, so the next call on this CPU host starts only when it returns, never beside it; a
    cancelled call still queued never runs."""
    RELEASE.clear()
    STARTED.clear()
    RUNNING[:] = [0, 0]
    host = cpu_host("hold")
    host.submit([(0, "hold", ask("卡住"))])
    assert STARTED.wait(20.0)  # the held call is in its thread
    host.cancel([0])
    host.submit([(1, "hold", ask("一")), (2, "hold", ask("不跑"))])
    host.cancel([2])
    time.sleep(0.3)  # time for the second call to start, were it let
    started_early = RUNNING[1]
    RELEASE.set()
    done = host.poll(10.0)
    assert started_early == 1, "the second call ran beside the cancelled one"
    assert RUNNING[1] == 1
    assert [k for k, _ in done] == [1]  # the cancelled calls' outcomes never come back
    assert host.poll(0.2) == []
    assert host.running() == 0


async def awork(request: Request) -> str:
    await asyncio.sleep(0.01)
    return f"异步：{request.prompt_text()}"


def test_a_cpu_host_runs_an_async_function_on_a_loop_of_its_own() -> None:
    """`cpu: true` on an async function still works: its thread gives the call a loop."""
    host = cpu_host("awork")
    host.submit([(0, "awork", ask("一")), (1, "awork", ask("二"))])
    done: dict[int, Outcome] = {}
    while len(done) < 2:
        done.update(host.poll(10.0))
    assert {k: c.text for k, (c, _) in done.items() if c is not None} == {
        0: "异步：一",
        1: "异步：二",
    }


def test_a_call_that_exits_fails_alone_and_the_cpu_host_runs_the_next_ones() -> None:
    """A BaseException out of an agent (SystemExit here) used to end the host's only
    thread: every call queued on that actor after it waited for ever."""
    host = cpu_host("exits")
    host.submit([(0, "exits", ask("退出")), (1, "exits", ask("一")), (2, "exits", ask("二"))])
    got: dict[int, Outcome] = {}
    while len(got) < 3:
        done = host.poll(10.0)
        assert done, "the host stopped answering"
        got.update(done)
    assert got[0][0] is None
    assert "SystemExit" in str(got[0][1])
    assert [got[k][0].text for k in (1, 2)] == ["答：一", "答：二"]  # type: ignore[union-attr]
