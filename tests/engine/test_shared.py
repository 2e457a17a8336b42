"""One account's budget across processes: the coordination file (`engine/shared.py`), and
the meter's use of it and of the provider's rate headers (`ProviderMeter.observe`)."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fanout import CallableProvider, Engine, ProviderLimits, Request, Task
from fanout.engine.limits import (
    FIRST_CALLS,
    OK,
    RATE_LIMITED,
    SHARED_HEADROOM,
    ProviderMeter,
)
from fanout.engine.shared import LEASE_S, SYNC_S, SharedAccount, account_id
from tests.engine.support import arun, overflow

ROOT = Path(__file__).resolve().parents[2]


def meter(path: Path, *, rpm: float | None = None, tpm: float | None = None) -> ProviderMeter:
    account = SharedAccount(path, account_id("openai", "http://127.0.0.1:1/v1", "sk-共享"))
    return ProviderMeter(
        "openai:sim-1", ProviderLimits(rpm=rpm, tpm=tpm, account=account), default_cap=64
    )


def busy(m: ProviderMeter, now: float) -> None:
    """The meter has a call to make at `now` (and syncs, its time being due)."""
    m.wait_time(now, Task("x"))


def test_the_account_is_named_by_a_hash_never_by_the_key(tmp_path: Path) -> None:
    a = account_id("openai", "http://h/v1/", "sk-secret-密钥")
    assert a == account_id("openai", "http://h/v1", "sk-secret-密钥")
    assert a != account_id("openai", "http://h/v1", "sk-other")
    assert a != account_id("anthropic", "http://h/v1", "sk-secret-密钥")
    m = meter(tmp_path / "accounts.db", rpm=600)
    busy(m, 0.0)
    data = (tmp_path / "accounts.db").read_bytes()
    assert b"sk-" not in data
    assert "共享".encode() not in data


def test_two_processes_split_the_budget_and_the_last_one_takes_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    a, b = meter(path, rpm=600), meter(path, rpm=600)
    busy(a, 0.0)
    assert a.rpm is not None
    assert a.rpm.interval == pytest.approx(0.1)  # alone: 600/min
    busy(b, 0.0)
    busy(a, SYNC_S)  # a sees b at its next sync
    assert b.rpm is not None
    half = 60 / (600 * (1 - SHARED_HEADROOM) / 2)  # each half, less the headroom
    assert (a.rpm.interval, b.rpm.interval) == (pytest.approx(half), pytest.approx(half))
    assert b.lease is not None
    b.lease.release()  # b ended
    busy(a, 2 * SYNC_S)
    assert a.rpm.interval == pytest.approx(0.1)


def test_a_process_with_nothing_to_send_leaves_its_share(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    a, b = meter(path, tpm=60_000), meter(path, tpm=60_000)
    busy(a, 0.0)
    busy(b, 0.0)
    busy(a, SYNC_S)
    assert a.tpm is not None
    assert a.tpm.interval == pytest.approx(60 / (60_000 * (1 - SHARED_HEADROOM) / 2))
    assert b.lease is not None
    b.lease.sync(demand=False, admitted=None)  # b has gone quiet: nothing in flight, none asked
    busy(a, 2 * SYNC_S)
    assert a.tpm.interval == pytest.approx(60 / 60_000)


def lease_holder(path: Path, then: str) -> subprocess.Popen[str]:
    """Another process holding a lease on the test account in `path`, running `then` (Python
    with `lease` bound) after taking it; it prints "synced" once it has synced."""
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from fanout.engine.shared import SharedAccount, account_id\n"
        "acc = SharedAccount(Path(sys.argv[1]), account_id('openai', 'http://127.0.0.1:1/v1', "
        "'sk-共享'))\n"
        "lease = acc.lease('sim-1')\n" + then
    )
    cmd = [sys.executable, "-c", code, str(path)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)


def test_a_killed_process_releases_its_share_by_lease_expiry(tmp_path: Path) -> None:
    """A real process takes a lease and is SIGKILLed: the survivor's share grows back once
    the lease expires, and not before it is gone."""
    path = tmp_path / "accounts.db"
    renewing = (
        "while True:\n"
        "    lease.sync(demand=True, admitted=None)\n"
        "    print('synced', flush=True)\n"
        "    time.sleep(0.1)\n"
    )
    with lease_holder(path, renewing) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "synced\n"
            a = meter(path, rpm=1200)
            busy(a, 0.0)
            assert a.rpm is not None
            # two share 1200/min
            assert a.rpm.interval == pytest.approx(60 / (1200 * (1 - SHARED_HEADROOM) / 2))
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
        killed = time.time()
        db = sqlite3.connect(path)
        (expires,) = db.execute("SELECT expires FROM leases WHERE pid = ?", (proc.pid,)).fetchone()
        db.close()
        now = 0.0
        while a.rpm.interval != pytest.approx(0.05):
            now += SYNC_S
            busy(a, now)
            assert time.time() - killed < 30 * LEASE_S, "the dead process's lease never expired"
            time.sleep(0.05)
        assert time.time() >= expires  # its share came back by the lease's expiry, not before


def test_a_live_process_that_stalls_keeps_its_share_until_it_dies(tmp_path: Path) -> None:
    """A real process takes a lease and then renews nothing for longer than `LEASE_S` while
    alive, as a `fanout batch` does on a loaded machine while its first call is held up
    (7-9 s seen at load 10): its share is kept, so the first process to get an answer does
    not see itself alone and send its whole concurrency into the account's budget (the
    four-process test's 429s came in such bursts). Killed, it is gone at once."""
    path = tmp_path / "accounts.db"
    stalled = (
        "lease.sync(demand=True, admitted=None)\nprint('synced', flush=True)\ntime.sleep(600)\n"
    )
    with lease_holder(path, stalled) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "synced\n"
            db = sqlite3.connect(path)
            (expires,) = db.execute(
                "SELECT expires FROM leases WHERE pid = ?", (proc.pid,)
            ).fetchone()
            db.close()
            while time.time() <= expires:  # its lease is past its expiry, unrenewed
                time.sleep(0.05)
            a = meter(path, rpm=1200)
            busy(a, 0.0)
            assert a.rpm is not None
            two = 60 / (1200 * (1 - SHARED_HEADROOM) / 2)
            assert a.rpm.interval == pytest.approx(two)  # still two share 1200/min
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    busy(a, SYNC_S)
    assert a.rpm.interval == pytest.approx(0.05)  # dead: its share back at the next sync


def test_the_learned_rate_is_shared_with_a_newcomer_and_given_back_when_it_ends(
    tmp_path: Path,
) -> None:
    path = tmp_path / "accounts.db"
    a = meter(path)
    busy(a, 0.0)
    t = Task("x")
    for i in range(80):  # 20 calls/s admitted for 4 s, then a 429 at the edge
        a.started(i / 20, t)
        a.finished(i / 20, t, OK, 10)
    overflow(a, 4.0)
    a.pause(4.0, 0.05)
    learned = a.pace_rate
    assert learned is not None  # about 0.9 x 20 (see test_rate_learning)
    busy(a, 4.0 + SYNC_S)  # records the account's rate
    b = meter(path)
    busy(b, 0.0)
    assert b.pace_rate == pytest.approx(learned / 2)  # paces at once at its share, no 429
    busy(a, 4.0 + 2 * SYNC_S)
    assert a.pace_rate == pytest.approx(learned / 2)
    assert b.lease is not None
    b.lease.release()
    busy(a, 4.0 + 3 * SYNC_S)
    assert a.pace_rate == pytest.approx(learned)  # what b freed, at once


def test_processes_that_learn_one_account_follow_one_rate_and_split_it_evenly(
    tmp_path: Path,
) -> None:
    """Without rate headers each process used to learn its own pace from its own 429s and
    climb in proportion to its own successes, so the one that started first kept up to three
    times its share (`tests/e2e/test_shared_account.py` failed in CI on it). Now the account's
    learned rate is one figure: each cut sets it (no higher than what all were admitted at,
    and never raised by a cut made before the last was seen), each climb adds to it, and
    every process paces at its share of it."""
    path = tmp_path / "accounts.db"
    a, b = meter(path), meter(path)
    busy(a, 0.0)
    busy(b, 0.0)
    busy(a, SYNC_S)  # both hold the account
    t = Task("x")
    for m, per_s in ((a, 15.0), (b, 5.0)):  # a took three times b's calls
        for i in range(int(4 * per_s)):
            m.started(i / per_s, t)
            m.finished(i / per_s, t, OK, 10)
        overflow(m, 4.0)
        m.pause(4.0, 0.05)
    assert a.pace_rate is not None
    assert b.pace_rate is not None
    assert a.pace_rate > 2 * b.pace_rate  # each learned from its own count
    for now in (4.0 + SYNC_S, 4.0 + 2 * SYNC_S):
        busy(a, now)
        busy(b, now)
    assert a.pace_rate == pytest.approx(b.pace_rate)  # one rate, split evenly
    assert a.pace_rate * 2 <= 20.0  # no more than the two were admitted at together
    before = a.pace_rate
    for i in range(20):  # a climbs (probing), b does not: the account's rate grows for both
        a.wait_time(5.0 + i / 10, t)  # (a call is held back by the pace: it binds)
        a.started(5.0 + i / 10, t)
        a.finished(5.0 + i / 10, t, OK, 10)
    busy(a, 7.1)
    busy(b, 7.1)
    assert b.pace_rate == pytest.approx(a.pace_rate)
    assert b.pace_rate > before


def test_a_guessed_pace_is_not_recorded_as_the_accounts_rate(tmp_path: Path) -> None:
    """A pace started before anything was measured (a 429 among the first calls) is a
    guess: recorded, it became the ceiling of the process left alone, which then used 0.30
    of the limit. A newcomer learns nothing from it."""
    path = tmp_path / "accounts.db"
    a = meter(path)
    busy(a, 0.0)
    overflow(a, 0.01)  # the first calls met a budget smaller than they were
    a.pause(0.01, 0.05)
    assert a.pace_rate is not None  # a guess, in slow start
    busy(a, SYNC_S)
    busy(a, 2 * SYNC_S)
    b = meter(path)
    busy(b, 0.0)
    assert b.pace_rate is None


def test_a_service_that_states_no_budget_is_climbed_from_a_slow_start_at_a_share(
    tmp_path: Path,
) -> None:
    """Four processes start on one account of a service that sends no rate headers: once
    its first answers came (`FIRST_CALLS`, and nothing stated), each paces from the calls
    in flight per second, its share of them, rather than sending its whole concurrency at
    once (four times sixteen calls met a budget of ten a second with dozens of 429s)."""
    path = tmp_path / "accounts.db"
    ms = [meter(path) for _ in range(4)]
    for m in ms:
        busy(m, 0.0)
    a = ms[0]
    busy(a, SYNC_S)  # a sees the other three
    first = [Task(f"f{i}") for i in range(FIRST_CALLS)]
    for t in first:
        assert a.wait_time(SYNC_S, t) == 0.0
        a.started(SYNC_S, t)
    assert a.wait_time(SYNC_S, Task("x")) == math.inf  # no answer yet
    a.finished(0.5, first[0], OK, 10)
    a.circuit.finished(0.5, first[0], OK, SYNC_S)  # the service answered, stating nothing
    assert a.wait_time(0.5, Task("y")) == 0.0
    assert a.pace_rate == pytest.approx(FIRST_CALLS / 4)  # (3 in flight + 1) / 4 holders
    a.started(0.5, Task("y"))
    assert a.wait_time(0.5, Task("z")) == pytest.approx(4 / FIRST_CALLS)
    b = meter(tmp_path / "other.db", rpm=600)  # a budget configured: no guess needed
    b.circuit.finished(0.5, Task("w"), OK, 0.0)
    b.wait_time(0.5, Task("w"))
    assert b.pace_rate is None


def test_an_unusable_file_means_running_alone_not_failing(tmp_path: Path) -> None:
    path = tmp_path / "accounts.db"
    path.write_bytes(b"this is not a database" * 100)
    m = meter(path, rpm=600)
    busy(m, 0.0)
    assert m.lease is not None
    assert m.lease.broken is not None
    assert m.rpm is not None
    assert m.rpm.interval == pytest.approx(0.1)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        db.execute("SELECT 1 FROM leases").fetchall()
    db.close()


def test_rate_headers_seed_the_budgets_and_a_spent_budget_holds_until_its_reset() -> None:
    m = ProviderMeter("openai:sim-1", ProviderLimits(), default_cap=64)
    t = Task("x")
    assert m.rpm is None
    m.observe(0.0, {"requests_limit": 600, "requests_remaining": 599, "requests_reset": 0.1})
    assert m.rpm is not None
    assert m.rpm.interval == pytest.approx(0.1)
    assert m.wait_time(0.0, t) == 0.0
    m.observe(1.0, {"requests_limit": 600, "requests_remaining": 0, "requests_reset": 30.0})
    # spent: a sliding window frees a call in about one interval; the reset (when the budget
    # is whole again) is far later
    assert m.wait_time(1.0, t) == pytest.approx(0.1)
    spent = {"requests_limit": 600, "requests_remaining": 0, "requests_reset": 30.0}
    m.observe(1.2, spent, retry_after=20.0)  # a 429 says when: a fixed window's end
    assert m.wait_time(1.2, t) == pytest.approx(20.0)
    m.observe(1.0, {"tokens_limit": 60_000, "requests_limit": 600})
    assert m.tpm is not None
    assert m.tpm.interval == pytest.approx(0.001)


def test_429s_before_any_success_with_a_stated_budget_leave_the_pace_to_it() -> None:
    """The budget is stated and nothing is measured yet: 429s among the first calls (the
    server's burst spent by other processes) pause, and the stated budget paces; no guessed
    pace (and no cut of one: that once crashed the workers and hung the run)."""
    m = ProviderMeter("openai:sim-1", ProviderLimits(), default_cap=64)
    m.observe(0.0, {"requests_limit": 1200})
    tasks = [Task(f"t{i}") for i in range(4)]
    for t in tasks:
        m.started(0.0, t)
    for k, at in enumerate((0.01, 1.5, 3.0)):
        m.finished(at, tasks[k], RATE_LIMITED, 0)
        assert m.pause(at, 0.05)
        assert m.pace_rate is None
        assert m.wait_time(at, tasks[k]) == pytest.approx(0.05)


def test_a_429_at_the_edge_of_a_stated_budget_drops_the_burst_not_the_rate() -> None:
    """Paced at the 1,200 rpm a service states, a 429 that reopens within a call says the
    service admits no burst on top of its rate (a sliding window does not): the meter drops
    its burst and keeps 1 % headroom, and learns no lower rate (that cost 7 % of a sliding
    window's limit). Met again, paced so, the rate is learned as usual."""
    m = ProviderMeter("openai:sim-1", ProviderLimits(), default_cap=64)
    m.observe(0.0, {"requests_limit": 1200})
    assert m.rpm is not None
    assert m.rpm.tau > 0.0
    succeed = [Task(f"t{i}") for i in range(60)]
    for i, t in enumerate(succeed):  # 20 calls/s for 3 s
        m.started(i / 20, t)
        m.finished(i / 20, t, OK, 10)
    r = Task("r")
    m.started(3.0, r)
    m.finished(3.0, r, RATE_LIMITED, 0)
    assert m.pause(3.0, 0.04)
    assert m.pace_rate is None  # no rate learned
    assert m.rpm.tau == 0.0
    assert m.rpm.interval == pytest.approx(60 / (1200 * (1 - SHARED_HEADROOM)))
    for i, t in enumerate(succeed[:30]):
        m.started(3.1 + i / 20, t)
        m.finished(3.1 + i / 20, t, OK, 10)
    m.started(4.7, r)
    m.finished(4.7, r, RATE_LIMITED, 0)
    assert m.pause(4.7, 0.04)
    assert m.pace_rate is not None  # the budget paced so was met again: learned
    assert m.rpm.tau == 0.0


def test_a_configured_limit_below_the_stated_one_wins_and_the_stated_one_caps_it() -> None:
    low = ProviderMeter("p:m", ProviderLimits(rpm=300), default_cap=64)
    low.observe(0.0, {"requests_limit": 600})
    assert low.rpm is not None
    assert low.rpm.interval == pytest.approx(0.2)
    high = ProviderMeter("p:m", ProviderLimits(rpm=6000), default_cap=64)
    high.observe(0.0, {"requests_limit": 600})
    assert high.rpm is not None
    assert high.rpm.interval == pytest.approx(0.1)


def test_a_call_is_charged_what_calls_use_not_its_whole_output_limit() -> None:
    """With answers of about 100 tokens and an output limit of 4,000, a TPM budget of 6,000
    a minute admits about one call a second, not one every 40 s; the usage reported then
    replaces the charge."""
    m = ProviderMeter("p:m", ProviderLimits(tpm=6000), default_cap=64)
    assert m.tpm is not None
    first, second = Task("a"), Task("b")
    first.est_tokens = second.est_tokens = 4000
    m.started(0.0, first)
    assert m.tpm.tat == pytest.approx(40.0)  # nothing known yet: the estimate
    m.finished(0.5, first, OK, 100)
    assert m.tpm.tat == pytest.approx(1.0)  # what it used
    m.started(1.0, second)
    assert m.tpm.tat == pytest.approx(1.0 + 1.5)  # 1.5 x the 100 tokens calls use
    m.finished(1.5, second, OK, 100)
    assert m.tpm.tat == pytest.approx(2.0)


def test_a_services_account_gets_a_few_calls_before_its_first_answer(tmp_path: Path) -> None:
    """Its first answer brings the rate headers (or the rate it admits): until then only
    `FIRST_CALLS` go out; a provider that is no account (the simulator in-process, a
    command) is not held back."""
    m = meter(tmp_path / "accounts.db")
    tasks = [Task(f"t{i}") for i in range(FIRST_CALLS + 1)]
    for t in tasks[:FIRST_CALLS]:
        assert m.wait_time(0.0, t) == 0.0
        m.started(0.0, t)
    assert m.wait_time(0.0, tasks[-1]) == math.inf
    m.finished(0.5, tasks[0], OK, 10)
    m.circuit.finished(0.5, tasks[0], OK, 0.0)
    assert m.wait_time(0.5, tasks[-1]) == 0.0
    alone = ProviderMeter("sim:sim-1", ProviderLimits(), default_cap=64)
    for t in tasks:
        assert alone.wait_time(0.0, t) == 0.0
        alone.started(0.0, t)


def test_an_engine_that_closes_gives_its_share_back_at_once(tmp_path: Path) -> None:
    """Engines one after the other in one long-lived process (the service, a script): each
    kept its lease until the process exited, so the next paced at half the account's budget
    as if another process shared it. Now closing an engine removes its lease."""
    path = tmp_path / "accounts.db"
    account = SharedAccount(path, account_id("openai", "http://127.0.0.1:1/v1", "sk-共享"))

    async def answer(req: Request) -> str:
        return "答"

    async def one_engine() -> float:
        async with Engine(
            providers=CallableProvider(answer, name="p"),
            limits={"p": ProviderLimits(rpm=600, account=account)},
        ) as engine:
            run = engine.submit([Task(f"问{i}") for i in range(3)])
            await run.wait()
            (pm,) = engine.provider_meters.values()
            assert pm.rpm is not None
            return pm.rpm.interval

    assert arun(one_engine) == pytest.approx(0.1)  # alone: the whole 600/min
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT COUNT(*) FROM leases").fetchone() == (0,)
    finally:
        db.close()
    assert arun(one_engine) == pytest.approx(0.1)  # the next one alone too, not a half
