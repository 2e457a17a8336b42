"""Batch input parsing, output lines and the atomic writer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from fanout import Engine, SimConfig, SimProvider
from fanout.batch import AtomicJsonlWriter, BatchSink, LineError, parse_lines, read_batch
from fanout.errors import InputError
from fanout.tasks import Priority


def lines(*objs: object) -> list[str]:
    return [o if isinstance(o, str) else json.dumps(o, ensure_ascii=False) for o in objs]


def test_simple_and_batch_forms_become_tasks_in_order() -> None:
    b = parse_lines(
        lines(
            {"id": "a", "prompt": "解释逆否命题", "priority": "urgent", "lane": "io"},
            "",
            {
                "custom_id": "b",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "m1", "messages": [{"role": "user", "content": "hi"}]},
            },
            {"id": "c", "messages": [{"role": "user", "content": "x"}], "depends_on": ["a"]},
        )
    )
    assert b.errors == []
    assert b.lines == 3  # the blank line is not a request
    assert [t.key for t in b.tasks] == ["a", "b", "c"]
    assert b.tasks[0].priority is Priority.URGENT
    assert b.tasks[0].lane == "io"
    assert b.tasks[1].body is not None
    assert b.tasks[1].body["model"] == "m1"
    assert b.tasks[2].depends_on == ("a",)
    assert [t.meta["line"] for t in b.tasks if t.meta] == [1, 3, 4]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "must be a JSON object, not an array"),
        ('"text"', "not a string"),
        ('{"prompt": "x"}', 'missing "id"'),
        ('{"id": "x"}', 'exactly one of "prompt"'),
        ('{"id": "x", "prompt": "p", "messages": []}', 'exactly one of "prompt"'),
        ('{"id": "x", "prompt": ""}', "non-empty string"),
        ('{"id": "x", "prompt": "p", "priority": "asap"}', "not one of urgent"),
        ('{"id": "x", "prompt": "p", "colour": 1}', "unknown field(s) colour"),
        ('{"id": "x", "prompt": "p", "depends_on": [1]}', "list of ids"),
        ('{"id": "x", "prompt": "p", "max_tokens": 0}', "positive integer"),
        ('{"custom_id": "x", "method": "GET", "body": {}}', 'must be "POST"'),
        ('{"custom_id": "x", "url": "/v1/embeddings", "body": {}}', "not supported"),
        ('{"custom_id": "x", "body": {"messages": []}}', "non-empty list"),
        ('{"custom_id": "x", "body": {"messages": [{"role": "user"}]}}', "messages[0]"),
    ],
)
def test_bad_lines_are_reported_with_line_number_and_reason(line: str, reason: str) -> None:
    b = parse_lines(['{"id": "ok", "prompt": "fine"}', line])
    assert len(b.tasks) == 1
    assert len(b.errors) == 1
    err = b.errors[0]
    assert err.line == 2
    assert reason in err.reason, err.reason
    assert str(err).startswith("line 2")


def test_duplicate_ids_and_missing_dependencies_cascade() -> None:
    b = parse_lines(
        lines(
            {"id": "a", "prompt": "1"},
            {"id": "a", "prompt": "2"},
            {"id": "b", "prompt": "3", "depends_on": ["nope"]},
            {"id": "c", "prompt": "4", "depends_on": ["b"]},
        )
    )
    assert [t.key for t in b.tasks] == ["a"]
    reasons = {e.line: e.reason for e in b.errors}
    assert "duplicate id 'a' (first on line 1)" in reasons[2]
    assert "not an id in this file" in reasons[3]
    assert "which was refused" in reasons[4]


def test_read_batch_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_batch(tmp_path / "缺失.jsonl")
    with pytest.raises(InputError, match="is a directory"):
        read_batch(tmp_path)
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes('{"id": "a", "prompt": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(InputError, match="not UTF-8"):
        read_batch(bad)


def test_atomic_writer_leaves_old_file_until_commit(tmp_path: Path) -> None:
    target = tmp_path / "结果.jsonl"
    target.write_text("old\n", encoding="utf-8")
    w = AtomicJsonlWriter(target)
    w.write({"a": "中文"})
    assert target.read_text(encoding="utf-8") == "old\n"
    w.commit()
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "中文"}
    assert [p.name for p in tmp_path.iterdir()] == ["结果.jsonl"]  # no temp file left
    w2 = AtomicJsonlWriter(target)
    w2.write({"b": 1})
    w2.abort()
    assert json.loads(target.read_text(encoding="utf-8")) == {"a": "中文"}
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("order", ["input", "completion"])
def test_sink_writes_one_line_per_input_line(tmp_path: Path, order: str) -> None:
    b = parse_lines(
        lines(
            # "slow" waits for "fast" (a line further down), "dep" for "slow": the completion
            # order is fixed by the dependencies, not by timing, and differs from the input's
            {"id": "slow", "prompt": "x" * 4000 + " {{fast}}", "depends_on": ["fast"]},
            "garbage",
            {"id": "dep", "prompt": "summarise: {{slow}}", "depends_on": ["slow"]},
            {"id": "fast", "prompt": "y"},
        )
    )
    out = tmp_path / "out.jsonl"

    async def main() -> None:
        sim = SimProvider(SimConfig(base_latency_s=0.001, per_token_s=0.00001))
        async with Engine(providers=sim, concurrency=4) as engine:
            sink = BatchSink(b, out, order)  # type: ignore[arg-type]
            run = engine.submit(b.tasks)
            sink.attach(run)
            await run.wait()
            assert await sink.finish(run) == 4

    asyncio.run(main())
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4
    ids = [r["custom_id"] for r in rows]
    if order == "input":
        assert ids == ["slow", None, "dep", "fast"]
    else:  # refused lines first (they were known before the run), then as tasks ended
        assert ids == [None, "fast", "slow", "dep"]
    by_id = {r["custom_id"]: r for r in rows}
    assert by_id[None]["error"]["code"] == "invalid_line"
    ok = by_id["fast"]["response"]
    assert ok["status_code"] == 200
    assert ok["body"]["choices"][0]["message"]["content"]
    assert ok["body"]["usage"]["total_tokens"] > 0


def test_dependency_answer_is_quoted_into_the_dependent_prompt() -> None:
    seen: list[str] = []
    b = parse_lines(
        lines(
            {"id": "q", "prompt": "first"},
            {"id": "s", "prompt": "echo <{{q}}>", "depends_on": ["q"]},
        )
    )

    async def echo(req: object) -> str:
        from fanout.providers.base import Request

        assert isinstance(req, Request)
        text = req.prompt_text()
        seen.append(text)
        return "ANSWER" if text == "first" else "done"

    from fanout import CallableProvider

    async def main() -> None:
        async with Engine(providers=CallableProvider(echo)) as engine:
            await engine.run(b.tasks)

    asyncio.run(main())
    assert seen == ["first", "echo <ANSWER>"]


def test_line_error_output_line() -> None:
    from fanout.batch import output_line

    row = output_line(LineError(7, "x", "bad"))
    assert row["error"] == {"code": "invalid_line", "message": "line 7 (x): bad"}
    assert row["response"] is None


def test_order_is_parsed_once_at_the_edge() -> None:
    from fanout.batch import parse_order
    from fanout.errors import ConfigError

    assert parse_order("input") == "input"
    assert parse_order("completion") == "completion"
    with pytest.raises(ConfigError, match="use 'input' or 'completion'"):
        parse_order("random")


@pytest.mark.parametrize("sep", ["\u2028", "\u2029", "\u0085"])
def test_a_line_holding_a_unicode_line_separator_stays_one_line(tmp_path: Path, sep: str) -> None:
    """JSONL lines end at \\n (or \\r\\n) only: a JSON string may hold U+2028, U+2029 and
    U+0085 as they are, where `str.splitlines` would split the line and lose the request."""
    rows = [
        json.dumps({"id": "a", "prompt": f"x{sep}y"}, ensure_ascii=False),
        json.dumps({"id": "b", "prompt": "第二行"}, ensure_ascii=False),
    ]
    path = tmp_path / "批.jsonl"
    path.write_bytes(("\r\n".join(rows) + "\n").encode())
    batch = read_batch(path)
    assert batch.errors == []
    assert [t.key for t in batch.tasks] == ["a", "b"]
    assert batch.tasks[0].prompt == f"x{sep}y"


def test_a_raw_control_character_makes_one_bad_line_not_two(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"id": "a", "prompt": "x\x0cy"}\n{"id": "b", "prompt": "ok"}\n')
    batch = read_batch(path)
    assert [e.line for e in batch.errors] == [1]
    assert [t.key for t in batch.tasks] == ["b"]


def test_the_output_file_gets_the_mode_open_would_give_it(tmp_path: Path) -> None:
    import os
    import stat

    old = os.umask(0o022)
    try:
        w = AtomicJsonlWriter(tmp_path / "out.jsonl")
        w.write({"a": 1})
        w.commit()
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o644
        (tmp_path / "out.jsonl").chmod(0o640)  # a file the user set up: its mode is kept
        w = AtomicJsonlWriter(tmp_path / "out.jsonl")
        w.write({"a": 2})
        w.commit()
        assert stat.S_IMODE((tmp_path / "out.jsonl").stat().st_mode) == 0o640
    finally:
        os.umask(old)
