"""The pieces behind issue 11's fixes, one by one: bounded YAML, unsendable JSONL lines,
sizes, the Anthropic base URL, the simulated scoring total."""

from __future__ import annotations

import asyncio
import json

import pytest

from fanout.agents import load_blueprints
from fanout.batch.parse import parse_lines, parse_size
from fanout.errors import ConfigError
from fanout.providers.anthropic import anthropic_base_url
from fanout.providers.base import Request
from fanout.providers.sim import SimConfig, SimProvider
from fanout.yamlcheck import MAX_DEPTH, parse_yaml, show


def test_yaml_aliases_that_expand_past_the_limit_are_refused() -> None:
    lines = ["a: &a [1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    for prev, cur in zip("abcde", "bcdef", strict=True):
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    assert parse_yaml("\n".join(lines[:4]), source="ok.yaml")["d"][0][0][0] == [*range(1, 10)]
    with pytest.raises(ConfigError, match=r"bomb\.yaml: .*aliases \(\*name\) expand to more"):
        parse_yaml("\n".join(lines), source="bomb.yaml")


def test_yaml_nesting_is_bounded() -> None:
    ok = "x: " + "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert isinstance(parse_yaml(ok, source="ok.yaml")["x"], list)
    for deep in (
        "x: " + "[" * 600 + "]" * 600,
        "x:\n" + "".join(" " * i + "- \n" for i in range(80)),
    ):
        with pytest.raises(ConfigError, match="nested more than"):
            parse_yaml(deep, source="deep.yaml")


def test_yaml_huge_integer_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="4,300"):
        parse_yaml("n: " + "1" * 5000, source="n.yaml")


def test_show_does_bounded_work_on_a_shared_structure() -> None:
    value: list[object] = ["lol"] * 9
    for _ in range(12):  # 9**13 strings if written out
        value = [value] * 9
    text = show({"k": value})
    assert len(text) <= 60
    assert text.startswith('{"k": [[[[')


def test_show_writes_small_values_as_json() -> None:
    v = {"a": [1, 2.5, "中文"], "b": None, "c": True}
    assert show(v) == json.dumps(v, ensure_ascii=False)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"id":"a","prompt":' + "[" * 101 + "]" * 101 + "}", "nested more than 100"),
        ('{"id":"a","prompt":' + "[" * 3000 + "]" * 3000 + "}", "nested more than 100"),
        ('{"id":"a","prompt":"x","n":' + "7" * 4301 + "}", "4,300"),
        ('{"id":"a","prompt":"\\ud800"}', "lone surrogate"),
        ('{"id":"a","messages":[{"role":"user","content":"\\udc00x"}]}', "lone surrogate"),
    ],
)
def test_lines_that_cannot_be_sent_are_bad_lines(line: str, why: str) -> None:
    b = parse_lines(['{"id":"ok","prompt":"好"}', line])
    assert [t.key for t in b.tasks] == ["ok"]
    assert len(b.errors) == 1
    assert b.errors[0].line == 2
    assert why in b.errors[0].reason


def test_a_paired_surrogate_escape_is_text() -> None:
    b = parse_lines(['{"id":"e","prompt":"smile \\ud83d\\ude00"}'])
    assert not b.errors
    assert b.tasks[0].prompt == "smile 😀"


def test_line_size_limit_counts_utf8_bytes() -> None:
    line = json.dumps({"id": "a", "prompt": "长" * 100}, ensure_ascii=False)
    assert parse_lines([line], max_line_bytes=len(line.encode()) + 1).tasks
    b = parse_lines([line], max_line_bytes=len(line))  # fewer bytes than the line has
    assert "over the" in b.errors[0].reason


@pytest.mark.parametrize(
    ("text", "n"), [("10MB", 10_000_000), ("500kB", 500_000), ("2,000", 2000), ("1.5m", 1_500_000)]
)
def test_parse_size(text: str, n: int) -> None:
    assert parse_size("--max-line", text) == n


@pytest.mark.parametrize("text", ["", "lots", "0", "-5MB", "5GB", "nan"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--max-line"):
        parse_size("--max-line", text)


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("http://127.0.0.1:8089/v1", "http://127.0.0.1:8089"),
        ("http://127.0.0.1:8089/v1/", "http://127.0.0.1:8089"),
        ("http://h/anthropic", "http://h/anthropic"),
        ("http://h/v1x", "http://h/v1x"),
        (None, None),
    ],
)
def test_anthropic_base_url_drops_a_trailing_v1(given: str | None, used: str | None) -> None:
    assert anthropic_base_url(given) == used


def test_the_simulated_score_total_is_the_sum_of_its_dimensions() -> None:
    bp = load_blueprints()["scoring-agent"]
    assert bp.schema is not None
    sim = SimProvider(SimConfig(base_latency_s=0.0, jitter=0.0))
    dims = ("accuracy", "imagery", "completeness", "originality")
    for i in range(40):
        request = Request(
            model="sim",
            messages=[{"role": "user", "content": f"解释 {i}"}],
            max_tokens=800,
            json_schema=dict(bp.schema),
        )
        score = json.loads(asyncio.run(sim.complete(request)).text)
        assert score["total"] == sum(score[d] for d in dims), score
