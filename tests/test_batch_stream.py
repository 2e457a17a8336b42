"""Streamed batches: only a window of tasks in memory, every line still answered once and in
order, bad lines reported with their numbers, dependencies across the window."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from fanout.batch import stream
from fanout.batch.output import Order
from fanout.batch.run import plan_batch, start_batch
from fanout.batch.stream import Feed, IdTable, scan_batch
from fanout.engine.events import Event, TaskFinished
from fanout.engine.retry import DEFAULT_BUDGET_FRACTION
from fanout.launch import EngineChoice, RunOptions
from fanout.tasks import Task

LINES = 3000
WINDOW = 64


def _write(path: Path) -> dict[int, str]:
    """An input of `LINES` lines with bad ones spread over it; returns line -> why bad."""
    bad = {2: "not valid JSON", 1500: 'give exactly one of "prompt"', 2999: "duplicate id"}
    rows: list[str] = []
    for i in range(1, LINES + 1):
        cid = f"问{i}"
        obj: dict[str, object] = {"id": cid, "prompt": f"请解释第{i}个概念"}
        if i == 10:  # a dependency far below the window
            obj = {"id": cid, "prompt": "接着说:{{问2900}}", "depends_on": ["问2900"]}
        if i == 2000:  # a dependency long finished and let go... unless it is kept
            obj = {"id": cid, "prompt": "再说:{{问3}}", "depends_on": ["问3"]}
        if i == 2:
            rows.append("{not json")
            continue
        if i == 1500:
            obj = {"id": cid}
        if i == 2999:
            obj = {"id": "问5", "prompt": "重复"}
        rows.append(json.dumps(obj, ensure_ascii=False))
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return bad


@pytest.mark.parametrize("order", ["input", "completion"])
def test_a_long_batch_holds_only_its_window(tmp_path: Path, order: Order) -> None:
    src = tmp_path / "输入.jsonl"
    bad = _write(src)
    out = tmp_path / "结果.jsonl"
    options = RunOptions(choice=EngineChoice(sim_latency="0", concurrency=8), cache=True)
    held: list[int] = []

    async def go() -> tuple[int, Feed | None]:
        plan = plan_batch(src, out, order, options)
        started = await start_batch(plan, options, store_path=tmp_path / "s", window=WINDOW)
        run = started.launched.run
        seen = [0]
        # the retry budget is the whole batch's from the start, not the window's
        assert run.retry_budget == math.ceil((LINES - len(bad)) * DEFAULT_BUDGET_FRACTION)

        def count(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                seen[0] += 1
                if seen[0] % 25 == 0:
                    held.append(sum(1 for t in run.tasks if t is not None))

        run.listen(count)
        done = await started.finish()
        assert done.bad_lines == tuple(sorted(bad))
        s = done.summary
        assert s["done"] == LINES - len(bad)
        # the tasks let go from memory still count in what the run spent (sim-1: $1/$2 per
        # million tokens in/out, the cache answered nothing here: every prompt differs)
        spent = (s["input_tokens"] * 1.0 + s["output_tokens"] * 2.0) / 1_000_000
        assert s["cost_usd"] == pytest.approx(spent, abs=1e-5)
        assert s["input_tokens"] > 0
        return seen[0], started.feed

    finished, feed = asyncio.run(go())
    assert finished == LINES - len(bad)
    assert feed is not None
    # the window bound holds, and the tasks kept for a dependent line are the only extra
    assert feed.most_live <= WINDOW
    assert held
    assert max(held) <= WINDOW + 2
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(lines) == LINES
    refused = {int(x["id"].removeprefix("batch_req_line")): x for x in lines if x["error"]}
    assert set(refused) == set(bad)
    for n, why in bad.items():
        message = refused[n]["error"]["message"]
        assert message.startswith(f"line {n}")
        assert why in message
    answered = [x["custom_id"] for x in lines if not x["error"]]
    expected = [f"问{i}" for i in range(1, LINES + 1) if i not in bad]
    if order == "input":
        assert [x["custom_id"] for x in lines if x["error"] is None] == expected
        at = [x["custom_id"] or x["id"] for x in lines]
        assert at[1] == "batch_req_line2"
        assert at[1499] == "问1500"
    else:
        assert sorted(answered) == sorted(expected)
        assert len(set(answered)) == len(answered)
        # a dependent ends after what it depends on, however far apart they are
        assert answered.index("问10") > answered.index("问2900")


def test_the_first_pass_keeps_no_task(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    bad = _write(src)
    scan = scan_batch(src)
    assert scan.lines == LINES
    assert scan.tasks == LINES - len(bad)
    assert [e.line for e in scan.errors] == sorted(bad)
    assert scan.referenced == {"问2900", "问3"}
    assert scan.forward


def test_a_refused_dependency_refuses_its_dependents_across_the_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows = [
        {"id": "a", "prompt": "x", "depends_on": ["b"]},
        {"id": "c", "prompt": "y"},
        {"id": "b", "prompt": "z", "depends_on": ["missing"]},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    scan = scan_batch(src)
    assert [(e.line, e.custom_id) for e in scan.errors] == [(1, "a"), (3, "b")]
    assert "'b', which was refused" in scan.errors[0].reason
    assert "is not an id in this file" in scan.errors[1].reason


def test_the_feed_never_holds_more_than_its_window() -> None:
    made = [0]

    def tasks() -> object:
        for i in range(10_000):  # a generator: the feed cannot have loaded it whole
            made[0] += 1
            yield Task(f"p{i}", key=f"k{i}")

    feed = Feed(tasks(), 100, frozenset())  # type: ignore[arg-type]
    first = feed.first()
    assert len(first) == 100
    assert made[0] == 100  # nothing read ahead of the window


def test_the_sdk_is_loaded_ahead_of_the_first_call() -> None:
    import subprocess
    import sys

    code = (
        "import sys, time\n"
        "from fanout.providers.openai import OpenAIProvider\n"
        "assert 'openai' not in sys.modules\n"
        "OpenAIProvider(api_key='k').preload()\n"
        "for _ in range(600):\n"
        "    if 'openai' in sys.modules and hasattr(sys.modules['openai'], 'AsyncOpenAI'): break\n"
        "    time.sleep(0.05)\n"
        "assert hasattr(sys.modules['openai'], 'AsyncOpenAI')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ids_that_share_a_hash_are_told_apart_by_their_text() -> None:
    # a weak hash (the id's length) makes most ids clash: duplicates and look-ups must
    # still be decided by the ids themselves, read again for the clashing lines only
    ids = IdTable(len)
    rows = {1: "问甲", 2: "ab", 3: "问乙", 4: "ab", 5: "xyz", 6: "问甲"}
    for line, cid in rows.items():
        ids.add(cid, line)
    ids.seal()
    asked: list[set[int]] = []

    def ids_of(wanted: set[int]) -> Iterator[tuple[int, str]]:
        asked.append(wanted)
        return ((line, rows[line]) for line in wanted)

    assert ids.settle(ids_of) == [(4, "ab", 2), (6, "问甲", 1)]
    assert asked == [{1, 2, 3, 4, 6}]  # "xyz" shares its hash with no other line
    assert ids.line_of("问乙") == 3
    assert ids.line_of("xyz") == 5
    assert ids.line_of("问丙") is None  # its hash is taken, its text is not
    assert ids.line_of("abcd") is None


def test_a_dependency_on_an_absent_id_that_matches_a_hash_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # with the id's length as its hash, "abc" matches "xyz": the line it names is read
    # again, and the dependency is found missing, not pointed at line 1
    monkeypatch.setattr(stream, "IdTable", lambda: IdTable(len))
    src = tmp_path / "依赖.jsonl"
    rows = [
        {"id": "xyz", "prompt": "甲"},
        {"id": "问乙", "prompt": "乙", "depends_on": ["abc"]},
        {"id": "问丙", "prompt": "丙", "depends_on": ["xyz"]},
    ]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    scan = scan_batch(src)
    assert [(e.line, e.reason) for e in scan.errors] == [
        (2, "depends_on 'abc', which is not an id in this file")
    ]
    assert scan.referenced == frozenset({"xyz"})


def test_the_first_pass_keeps_one_word_a_line() -> None:
    # the id table is what a first pass holds for every line (the peak of a million-line
    # batch, before the run starts): a hash and a line in one 64-bit word, not two
    import tracemalloc

    n = 100_000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        ids = IdTable()
        for i in range(n):
            ids.add(f"问{i}", i + 1)
        ids.seal()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held / n < 10  # bytes a line: 8 of words, the rest the arrays' spare room
    # (42 bits of hash: a clash is rare but possible; the clashing lines are read again)
    assert ids.settle(lambda lines: ((line, f"问{line - 1}") for line in lines)) == []
    assert [ids.line_of(f"问{i}") for i in (0, 4_999, n - 1)] == [1, 5_000, n]
    assert ids.line_of("问-1") is None


def test_duplicate_ids_are_refused_with_their_first_line(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    rows: list[dict[str, object]] = [{"id": f"问{i}", "prompt": "x"} for i in range(5000)]
    rows += [
        {"id": "问17", "prompt": "again"},
        {"id": "后", "prompt": "y", "depends_on": ["问4999"]},
    ]
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    scan = scan_batch(src)
    assert [(e.line, e.custom_id) for e in scan.errors] == [(5001, "问17")]
    assert "first on line 18" in scan.errors[0].reason
    assert scan.referenced == {"问4999"}
    assert not scan.forward


def test_a_long_batch_keeps_no_slot_per_line(tmp_path: Path) -> None:
    # `Run.tasks` and `Run.results_by_n` drop the slots of the tasks let go before the
    # oldest live one (engine/numbered.py): a plain list kept 16 bytes a line for ever
    from fanout.engine.numbered import TRIM_AT

    lines = 4 * TRIM_AT + 500
    src = tmp_path / "输入.jsonl"
    src.write_text(
        "".join(
            json.dumps({"id": f"问{i}", "prompt": f"请解释第{i}个概念"}, ensure_ascii=False) + "\n"
            for i in range(lines)
        ),
        encoding="utf-8",
    )
    out = tmp_path / "结果.jsonl"
    options = RunOptions(choice=EngineChoice(sim_latency="0", concurrency=8), cache=True)
    held: list[int] = []

    async def go() -> int:
        plan = plan_batch(src, out, "input", options)
        started = await start_batch(plan, options, store_path=tmp_path / "s", window=WINDOW)
        run = started.launched.run

        def count(ev: Event) -> None:
            if isinstance(ev, TaskFinished):
                held.append(max(run.tasks.held, run.results_by_n.held))

        run.listen(count)
        done = await started.finish()
        assert len(run.tasks) == lines
        return int(done.summary["done"])

    assert asyncio.run(go()) == lines
    assert len(held) == lines
    assert max(held) <= 2 * (TRIM_AT + WINDOW)  # not one slot per line
    got = [json.loads(x)["custom_id"] for x in out.read_text(encoding="utf-8").splitlines()]
    assert got == [f"问{i}" for i in range(lines)]
