"""Several `fanout batch` processes on one account (issue 10): real processes, one
`FANOUT_HOME` (so one `accounts.db`), one key, against a sim-server process over HTTP. The
scenario and its figures are `bench/ratelimit_procs.py`'s, at a higher rate and shorter
phases than the benchmark so each test stays well under a minute; the benchmark's figures
are in docs/benchmarks.md. The bounds here leave room for a machine loaded by other suites
(on which 429 shares of 1.1-1.4 % and 0.88 of the limit were seen) while still failing
without the sharing: processes each pacing at the whole limit get a large share of 429s,
and the one left alone stays at its share (`alone_after_s` None)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "fanout_bench_procs", ROOT / "bench" / "ratelimit_procs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up
    spec.loader.exec_module(module)
    return module


BENCH = _bench()
FAST: dict[str, Any] = {"latency": 0.1, "concurrency": 16, "together": 10.0, "alone": 7.0}


def scenario(tmp_path: Path, **kw: Any) -> Any:
    return BENCH.run(workdir=tmp_path, warmup=2.0, **{**FAST, **kw})


@pytest.mark.parametrize("procs", [2, 4])
def test_processes_each_given_the_accounts_rpm_share_it(tmp_path: Path, procs: int) -> None:
    """Each told the account's whole 1,500 rpm: together they use it, with almost no 429s,
    and the one left alone takes the whole budget back within seconds."""
    f = scenario(tmp_path, procs=procs, rpm=1500, configure=True)
    assert f.failed == 0
    assert f.done == f.lines, f.as_dict()
    assert f.together >= 0.85, f.as_dict()
    assert f.rejected_429_share <= 0.03, f.as_dict()
    assert f.alone_after_s is not None, f.as_dict()
    assert f.alone_after_s <= 10.0, f.as_dict()
    assert "sk-" not in (tmp_path / "home" / "accounts.db").read_bytes().decode("latin-1")


def test_processes_share_a_token_budget_that_binds(tmp_path: Path) -> None:
    f = scenario(tmp_path, procs=2, rpm=100_000, tpm=120_000, tokens_per_call=124, configure=True)
    assert f.failed == 0
    assert f.done == f.lines, f.as_dict()
    assert f.together >= 0.85, f.as_dict()
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
    assert f.rejected_429_share <= 0.03, f.as_dict()
    assert f.alone_after_s is not None, f.as_dict()
    assert f.alone_after_s <= 10.0, f.as_dict()
