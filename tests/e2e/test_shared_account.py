"""Several `fanout batch` processes on one account (issue 10): real processes, one
`FANOUT_HOME` (so one `accounts.db`), one key, against a sim-server process over HTTP. The
scenario and its figures are `bench/ratelimit_procs.py`'s, at a higher rate and shorter
phases than the benchmark so each test stays well under a minute; the benchmark's figures
are in docs/benchmarks.md.

What the issue asks is asserted where it is a count the sim-server keeps: no task failed,
and at most 1 % of requests were 429s when a budget is configured or stated (without rate
headers, where only 429s teach the rate, a looser share). The use of the limit is a rate
over wall time, which a machine loaded by other suites lowers: it is held to 0.85 here
(the benchmark measures the 0.95). Without the sharing the tests fail all the same:
processes each pacing at the whole limit get a large share of 429s, and the one left alone
stays at its share (`alone_after_s` None)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.benches import bench_module

BENCH = bench_module("ratelimit_procs")
FAST: dict[str, Any] = {"latency": 0.1, "concurrency": 16, "together": 10.0, "alone": 7.0}


def scenario(tmp_path: Path, **kw: Any) -> Any:
    return BENCH.run(workdir=tmp_path, warmup=2.0, **{**FAST, **kw})


def test_processes_each_given_the_accounts_rpm_share_it(tmp_path: Path) -> None:
    """Four, each told the account's whole 1,500 rpm: together they use it, with at most
    1 % 429s, and the one left alone takes the whole budget back within seconds."""
    f = scenario(tmp_path, procs=4, rpm=1500, configure=True)
    assert f.failed == 0
    assert f.done == f.lines, f.as_dict()
    assert f.together >= 0.85, f.as_dict()
    assert f.rejected_429_share <= 0.01, f.as_dict()
    assert f.alone_after_s is not None, f.as_dict()
    assert f.alone_after_s <= 10.0, f.as_dict()
    assert "sk-" not in (tmp_path / "home" / "accounts.db").read_bytes().decode("latin-1")


def test_processes_share_a_token_budget_that_binds(tmp_path: Path) -> None:
    f = scenario(tmp_path, procs=2, rpm=100_000, tpm=120_000, tokens_per_call=124, configure=True)
    assert f.failed == 0
    assert f.done == f.lines, f.as_dict()
    assert f.together >= 0.85, f.as_dict()
    # not the 1 %: a binding token budget still meets 0.4-2.2 % 429s (benchmarks §15)
    assert f.rejected_429_share <= 0.03, f.as_dict()
    assert f.alone_after_s is not None, f.as_dict()
    assert f.alone_after_s <= 10.0, f.as_dict()


def test_with_no_limit_configured_the_rate_headers_set_the_pace(tmp_path: Path) -> None:
    f = scenario(tmp_path, procs=2, rpm=1500)
    assert f.failed == 0
    assert f.done == f.lines, f.as_dict()
    assert f.together >= 0.85, f.as_dict()
    # the headers, not 429s, told them the pace: without them a start of 16 calls at once
    # in each process meets the server's burst of 25 with a dozen 429s or more
    assert f.rejected_429_share <= 0.01, f.as_dict()
    assert f.alone_after_s is not None, f.as_dict()
    assert f.alone_after_s <= 10.0, f.as_dict()


def test_four_processes_without_rate_headers_learn_the_rate_and_fail_nothing(
    tmp_path: Path,
) -> None:
    """Nothing configured and no rate headers: only 429s teach the rate. Until one was
    measured, each pause used to end with every queued call sent at once, and four
    processes lost up to 231 of 500 tasks with 23-64 % of requests 429s. Now the first 429
    starts a pace, so no task fails; the 429s that teach the rate stay a small share.

    The processes learn one rate for the account in `accounts.db` and split it evenly: each
    learning its own, the first to start kept up to three times its share and the account
    was used at 0.76 while they learned (CI: equal work ended 7.7 s, 13.3 s and 15.0 s after
    the start). `together` is measured from the moment all four hold their lease (or as many
    as ever met: at least three must), not from the first answer: on a loaded machine one
    process can start seconds before the others, run alone at the whole limit and end before
    they begin, which says nothing about the sharing. The learning period is inside the
    window, so unfair or slow learning still fails here, and so do failed tasks and a storm
    of 429s. The even split itself: `tests/engine/test_shared.py`
    (`test_processes_that_learn_one_account_follow_one_rate_and_split_it_evenly`)."""
    f = scenario(tmp_path, procs=4, rpm=1500, rate_headers=False)
    assert f.failed == 0, f.as_dict()
    assert f.done == f.lines, f.as_dict()
    assert f.rejected_429_share <= 0.12, f.as_dict()
    # they met on the account (all four, unless one ended before the last began)
    assert f.overlap >= 3, f.as_dict()
    assert f.together >= 0.80, f.as_dict()
