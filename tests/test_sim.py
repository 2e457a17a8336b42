"""The in-process simulator: determinism, languages, usage, JSON, faults, GCRA, stats."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest

from fanout.errors import Overloaded, ProviderTimeout, RateLimited, ServerError
from fanout.providers.base import Chunk, Completion, Provider, Request, estimate_tokens
from fanout.providers.sim import (
    FAULT_KINDS,
    SimConfig,
    SimProvider,
    body_hash,
    parse_faults,
    parse_latency,
)

T = TypeVar("T")
FAST: dict[str, Any] = {"base_latency_s": 0.001, "jitter": 0.0}


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        return await aw

    return asyncio.run(main())


def sim(**kw: Any) -> SimProvider:
    return SimProvider(SimConfig(**{**FAST, **kw}))


def req(text: str, **kw: Any) -> Request:
    return Request(model="sim-1", messages=[{"role": "user", "content": text}], **kw)


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- answers ---------------------------------------------------------------------------


def test_same_request_same_text_and_prompt_drives_it() -> None:
    a = run(sim().complete(req("Explain recursion")))
    b = run(sim().complete(req("Explain recursion")))
    other = run(sim().complete(req("Explain iteration")))
    reseeded = run(sim(seed=7).complete(req("Explain recursion")))
    assert a.text == b.text
    assert a.text
    assert other.text != a.text
    assert reseeded.text != a.text
    assert a.model == "sim-1"
    assert a.finish_reason == "stop"


def test_chinese_prompt_gets_chinese_answer_and_english_gets_english() -> None:
    zh = run(sim().complete(req("请解释什么是递归，并举一个例子。")))
    cjk = sum(is_cjk(ch) for ch in zh.text)
    assert cjk / len(zh.text) > 0.8
    assert "。" in zh.text or "！" in zh.text or "？" in zh.text
    en = run(sim().complete(req("Explain recursion with an example.")))
    assert en.text.isascii()
    assert len(en.text.split()) > 5


def test_usage_counts_prompt_and_answer_tokens() -> None:
    p = sim(min_output_tokens=30, max_output_tokens=200)
    for i in range(40):
        text = f"问题 {i}: 为什么天空是蓝色的?" if i % 2 else f"Question {i}: why is the sky blue?"
        r = req(text, max_tokens=4096)
        c = run(p.complete(r))
        assert c.input_tokens == estimate_tokens(r.prompt_text())
        assert c.output_tokens == estimate_tokens(c.text)
        assert 25 <= c.output_tokens <= 202
        assert c.finish_reason == "stop"


def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    for prompt in ("Tell me a long story about rivers", "讲一个关于河流的长故事"):
        full = run(sim(min_output_tokens=150, max_output_tokens=150).complete(req(prompt)))
        cut = run(
            sim(min_output_tokens=150, max_output_tokens=150).complete(req(prompt, max_tokens=20))
        )
        assert full.finish_reason == "stop"
        assert cut.finish_reason == "length"
        assert cut.output_tokens == estimate_tokens(cut.text)
        assert 18 <= cut.output_tokens <= 20
        assert full.text.startswith(cut.text)


def _validate(value: Any, schema: dict[str, Any], path: str = "$") -> None:
    """A tiny JSON-schema validator for the subset the simulator supports."""
    if "enum" in schema:
        assert value in schema["enum"], path
        return
    kind = schema.get("type")
    if kind == "object":
        assert isinstance(value, dict), path
        for key in schema.get("required", []):
            assert key in value, f"{path}.{key} missing"
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _validate(value[key], sub, f"{path}.{key}")
    elif kind == "array":
        assert isinstance(value, list), path
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 10**9), path
        for i, item in enumerate(value):
            _validate(item, schema.get("items", {}), f"{path}[{i}]")
    elif kind == "string":
        assert isinstance(value, str), path
        assert len(value) >= schema.get("minLength", 0), path
        assert len(value) <= schema.get("maxLength", 10**9), path
    elif kind in ("integer", "number"):
        assert isinstance(value, int | float), path
        assert not isinstance(value, bool), path
        if kind == "integer":
            assert isinstance(value, int), path
        assert schema.get("minimum", -(10**18)) <= value <= schema.get("maximum", 10**18), path
    elif kind == "boolean":
        assert isinstance(value, bool), path


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0.25, "maximum": 0.75},
        "level": {"type": "string", "enum": ["novice", "learner", "expert"]},
        "summary": {"type": "string", "minLength": 40, "maxLength": 80},
        "passed": {"type": "boolean"},
        "steps": {
            "type": "array",
            "minItems": 2,
            "maxItems": 4,
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "order": {"type": "integer"}},
                "required": ["title", "order"],
            },
        },
    },
    "required": ["score", "level", "summary", "steps"],
}


def test_json_schema_answers_validate() -> None:
    p = sim()
    seen_scores = set()
    for i in range(30):
        prompt = f"给这个笔记打分 {i}" if i % 3 == 0 else f"Score note {i}"
        c = run(p.complete(req(prompt, json_schema=SCHEMA)))
        value = json.loads(c.text)
        _validate(value, SCHEMA)
        seen_scores.add(value["score"])
        if i % 3 == 0:
            assert any(is_cjk(ch) for ch in value["summary"])
    assert len(seen_scores) > 1  # derived from the prompt, not constant


def test_json_mode_without_schema_is_a_small_object() -> None:
    for r in (req("answer in JSON", json_mode=True), req("answer in JSON", json_schema={})):
        c = run(sim().complete(r))
        value = json.loads(c.text)
        assert isinstance(value, dict)
        assert value


# -- faults ----------------------------------------------------------------------------

RATES = {"429": 0.10, "500": 0.05, "529": 0.05, "timeout": 0.04, "truncated": 0.08, "empty": 0.03}


def test_fault_rates_land_near_the_configured_rates() -> None:
    p = sim(faults=RATES)
    n = 2000
    counts = Counter(p.fault_for(req(f"question number {i}")) for i in range(n))
    for kind, rate in RATES.items():
        assert abs(counts[kind] / n - rate) < 0.03, (kind, counts[kind])
    assert abs(counts[None] / n - (1 - sum(RATES.values()))) < 0.04


def test_fault_draws_repeat_per_attempt_and_redraw_on_retry() -> None:
    a, b = sim(faults={"500": 0.5}), sim(faults={"500": 0.5})
    n = 2000
    first = [a.fault_for(req(f"q{i}")) for i in range(n)]
    assert first == [b.fault_for(req(f"q{i}")) for i in range(n)]  # same seed, body, attempt
    second = [a.fault_for(req(f"q{i}", attempt=2)) for i in range(n)]
    both = sum(x == "500" and y == "500" for x, y in zip(first, second, strict=True))
    assert abs(both / n - 0.25) < 0.04  # independent draws, not the same one again
    reseeded = [sim(seed=1, faults={"500": 0.5}).fault_for(req(f"q{i}")) for i in range(200)]
    assert reseeded != first[:200]


@pytest.mark.parametrize(
    ("kind", "error", "status", "retry_after"),
    [
        ("429", RateLimited, 429, 2.5),
        ("500", ServerError, 500, None),
        ("529", Overloaded, 529, 2.5),
    ],
)
def test_injected_errors(
    kind: str, error: type[Exception], status: int, retry_after: float | None
) -> None:
    p = sim(faults={kind: 1.0}, retry_after_s=2.5)
    with pytest.raises(error) as info:
        run(p.complete(req("hello")))
    assert getattr(info.value, "status", None) == status
    assert getattr(info.value, "retry_after", None) == retry_after
    assert p.stats()["completed_total"] == 0
    assert p.stats()["faults"] == {kind: 1}


def test_timeout_fault_hangs_until_the_callers_timeout() -> None:
    p = sim(faults={"timeout": 1.0})
    with pytest.raises(TimeoutError):
        run(asyncio.wait_for(p.complete(req("hello")), 0.05))
    with pytest.raises(ProviderTimeout):  # with no caller timeout it gives up after hang_s
        run(sim(faults={"timeout": 1.0}, hang_s=0.0).complete(req("hello")))


def test_truncated_and_empty_faults() -> None:
    clean = run(sim(min_output_tokens=100, max_output_tokens=100).complete(req("long answer")))
    p = sim(min_output_tokens=100, max_output_tokens=100, faults={"truncated": 1.0})
    cut = run(p.complete(req("long answer")))
    assert cut.finish_reason == "length"
    assert clean.text.startswith(cut.text)
    assert 0.4 <= cut.output_tokens / clean.output_tokens <= 0.6
    empty = run(sim(faults={"empty": 1.0}).complete(req("long answer")))
    assert (empty.text, empty.finish_reason, empty.output_tokens) == ("", "stop", 0)
    assert empty.input_tokens > 0


# -- rate limits (GCRA) ----------------------------------------------------------------


def test_rpm_burst_beyond_one_second_gets_429() -> None:
    clock = FakeClock()
    p = SimProvider(SimConfig(rpm=120, **FAST), clock=clock)  # 2 per second
    run(p.complete(req("a")))
    run(p.complete(req("b")))
    with pytest.raises(RateLimited) as info:
        run(p.complete(req("c")))
    assert info.value.status == 429
    assert info.value.retry_after is not None
    assert info.value.retry_after == pytest.approx(0.5)
    for _ in range(5):  # rejected calls do not use up budget
        with pytest.raises(RateLimited):
            run(p.complete(req("c")))
    clock.now += 0.5
    run(p.complete(req("c")))
    stats = p.stats()
    assert (stats["requests_total"], stats["completed_total"], stats["rejected_429"]) == (9, 3, 6)


def test_rpm_concurrent_burst_with_the_real_clock() -> None:
    p = sim(rpm=60)  # a one-request burst, then one per second

    async def burst() -> list[Completion | BaseException]:
        calls = [p.complete(req(f"q{i}")) for i in range(8)]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(burst())
    limited = [r for r in results if isinstance(r, RateLimited)]
    assert len(limited) >= 6
    assert all(r.retry_after is not None and r.retry_after > 0 for r in limited)
    assert p.stats()["rejected_429"] == len(limited)
    assert p.stats()["completed_total"] == 8 - len(limited)


def test_tpm_limits_tokens_and_admits_a_big_call_when_idle() -> None:
    clock = FakeClock()
    cfg = SimConfig(tpm=6000, min_output_tokens=40, max_output_tokens=40, **FAST)
    p = SimProvider(cfg, clock=clock)  # 100 tokens per second
    run(p.complete(req("question 1")))  # about 45 tokens each: two fit in one second
    run(p.complete(req("question 2")))
    with pytest.raises(RateLimited) as info:
        run(p.complete(req("question 3")))
    assert info.value.retry_after is not None
    assert info.value.retry_after > 0
    assert p.stats()["completed_total"] == 2
    assert p.stats()["rejected_429"] == 1
    clock.now += 10
    big = SimProvider(SimConfig(tpm=60, **FAST), clock=clock)  # 1 token per second
    run(big.complete(req("more than one second of tokens")))
    with pytest.raises(RateLimited):
        run(big.complete(req("more")))


# -- stats, streaming, protocol ----------------------------------------------------------


def test_stats_count_completions_by_request_hash() -> None:
    p = sim()
    r1, r2 = req("first"), req("second", temperature=0.2)
    for _ in range(3):
        run(p.complete(r1))
    run(p.complete(r2))
    canonical = json.dumps(p.body(r1), sort_keys=True, separators=(",", ":"))
    h1 = hashlib.sha256(canonical.encode()).hexdigest()
    assert h1 == p.request_hash(r1) == body_hash(p.body(r1))
    stats = p.stats()
    assert stats["by_request_hash"] == {h1: 3, p.request_hash(r2): 1}
    assert (stats["requests_total"], stats["completed_total"], stats["rejected_429"]) == (4, 4, 0)
    p.reset_stats()
    assert p.stats() == {
        "requests_total": 0,
        "completed_total": 0,
        "rejected_429": 0,
        "by_request_hash": {},
        "faults": {},
    }


def test_stream_yields_chunks_then_the_completion() -> None:
    p = sim(min_output_tokens=120, max_output_tokens=120)

    async def collect(r: Request) -> list[Chunk | Completion]:
        return [item async for item in p.stream(r)]

    for prompt in ("Stream a long answer", "流式输出一个长答案"):
        items = run(collect(req(prompt)))
        *chunks, last = items
        assert isinstance(last, Completion)
        assert all(isinstance(c, Chunk) for c in chunks)
        assert len(chunks) > 3
        assert "".join(c.text for c in chunks if isinstance(c, Chunk)) == last.text
        assert last.text == run(p.complete(req(prompt))).text
    assert p.stats()["completed_total"] == 4


def test_stream_timeout_hangs_after_the_first_chunk() -> None:
    p = sim(faults={"timeout": 1.0})
    got: list[Chunk | Completion] = []

    async def consume() -> None:
        async for item in p.stream(req("hello there")):
            got.append(item)

    with pytest.raises(TimeoutError):
        run(asyncio.wait_for(consume(), 0.1))
    assert len(got) == 1
    assert isinstance(got[0], Chunk)


def test_body_is_canonical_and_the_provider_fits_the_protocol() -> None:
    p = sim()
    assert isinstance(p, Provider)
    assert (p.name, p.streams) == ("sim", True)
    assert p.limiter_key("sim-1") == "sim:sim-1"
    assert set(p.body(req("x"))) == {"model", "messages", "max_tokens"}
    body = p.body(req("x", temperature=0.3, json_schema={"type": "object"}, extra={"top_p": 1}))
    assert body["temperature"] == 0.3
    assert body["response_format"]["type"] == "json_schema"
    assert body["top_p"] == 1
    assert p.body(req("x", json_mode=True))["response_format"] == {"type": "json_object"}
    run(p.aclose())


# -- parsing and validation --------------------------------------------------------------


def test_parse_faults() -> None:
    assert parse_faults("429=0.05,500=0.02,timeout=0.01") == {
        "429": 0.05,
        "500": 0.02,
        "timeout": 0.01,
    }
    assert parse_faults("") == {}
    assert parse_faults(" 529 = 5% , ") == {"529": 0.05}
    assert set(FAULT_KINDS) == set(parse_faults(",".join(f"{k}=0.1" for k in FAULT_KINDS)))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("418=0.1", ["418", "allowed", "429"]),
        ("429=1.5", ["429", "[0, 1]"]),
        ("500=-0.1", ["500", "[0, 1]"]),
        ("429", ["429", "KEY=VALUE"]),
        ("429=lots", ["lots", "not a number"]),
        ("429=0.1,429=0.2", ["twice"]),
        ("429=0.6,500=0.6", ["<= 1"]),
    ],
)
def test_parse_faults_errors(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        parse_faults(text)
    for word in words:
        assert word in str(info.value)


def test_parse_latency() -> None:
    assert parse_latency("50ms")["base_latency_s"] == pytest.approx(0.05)
    assert parse_latency("0.05") == {"base_latency_s": 0.05}
    assert parse_latency("0.05s") == {"base_latency_s": 0.05}
    kw = parse_latency("base=50ms,per_token=1ms,jitter=0.2")
    assert kw == {"base_latency_s": 0.05, "per_token_s": 0.001, "jitter": 0.2}
    cfg = SimConfig(**kw)
    assert (cfg.base_latency_s, cfg.per_token_s, cfg.jitter) == (0.05, 0.001, 0.2)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("fast", ["fast", "50ms"]),
        ("-5ms", ["-5ms"]),
        ("", ["latency"]),
        ("base=50ms,speed=2", ["speed", "allowed", "per_token"]),
        ("jitter=2", ["jitter", "[0, 1]"]),
        ("base=10 minutes", ["10 minutes"]),
    ],
)
def test_parse_latency_errors(text: str, words: list[str]) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        parse_latency(text)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(
    ("kw", "word"),
    [
        ({"faults": {"404": 0.1}}, "404"),
        ({"faults": {"500": 2.0}}, "500"),
        ({"jitter": 1.5}, "jitter"),
        ({"rpm": 0}, "rpm"),
        ({"base_latency_s": -1.0}, "base_latency_s"),
        ({"min_output_tokens": 50, "max_output_tokens": 10}, "min_output_tokens"),
    ],
)
def test_config_errors(kw: dict[str, Any], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        SimConfig(**kw)


def test_sim_follows_length_and_table_instructions_like_a_model() -> None:
    import asyncio

    from fanout.providers.base import Request
    from fanout.providers.sim import SimConfig, SimProvider

    sim = SimProvider(SimConfig(base_latency_s=0.0, jitter=0.0))

    def ask(prompt: str) -> str:
        req = Request(
            model="sim-1", messages=[{"role": "user", "content": prompt}], max_tokens=4000
        )
        return asyncio.run(sim.complete(req)).text

    text = ask("请解释逆否命题。Write 800 to 1200 characters (字).")
    assert 700 <= len(text) <= 1300
    longer = ask("请解释逆否命题。At least 1500 characters (字).")
    assert len(longer) >= 1400
    plain = ask("请解释逆否命题。")
    assert len(plain) < 400  # no instruction: the configured natural length
    table = ask("比较逆命题和逆否命题，用一个 Markdown table。")
    assert "| --- | --- | --- |" in table
    assert "| --- |" not in plain


def test_every_builtin_agent_passes_its_checks_on_the_simulator() -> None:
    import asyncio

    import fanout
    from fanout.agents import builtin_blueprints

    bps = builtin_blueprints()
    inputs = {
        "question": "什么是逆否命题？",
        "learner_text": "逆否命题就是把条件和结论都否定再交换，和原命题同真同假。",
        "topic": "离散数学",
    }
    tasks = [bp.task(inputs) for bp in bps.values()]
    sim = fanout.SimProvider(fanout.SimConfig(base_latency_s=0.0))

    async def main() -> fanout.Run:
        async with fanout.Engine(providers=sim, concurrency=10) as engine:
            return await engine.run(tasks)

    run = asyncio.run(main())
    for t in tasks:
        r = run.result(t)
        assert r is not None
        assert r.ok, (t.agent, r.error)
        assert r.attempts == 1, t.agent
        if t.output == "json":  # the schema reached the simulator: data, not a retry
            assert t.schema is not None
            assert isinstance(r.data, dict)
    score = run.result(next(t for t in tasks if t.agent == "scoring-agent"))
    assert score is not None
    assert 0 <= score.data["total"] <= 100


def test_the_simulator_a_batch_runs_in_process_keeps_no_count_per_request() -> None:
    # a million distinct prompts would hold a million hashes (about 170 MB): the simulator
    # built from a provider spec (the CLI's `--provider sim`) counts totals only
    from fanout.providers.sim import from_spec
    from fanout.providers.spec import ProviderSpec

    spec = ProviderSpec(type="sim")
    p = from_spec("sim", spec, concurrency=4)
    for i in range(5):
        run(p.complete(req(f"第{i}问")))
    stats = p.stats()
    assert stats["completed_total"] == 5
    assert stats["by_request_hash"] == {}
