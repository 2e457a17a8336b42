"""The simulator's limit shapes (fixed window, token bucket, sliding window, GCRA) and the
rate headers the sim-server sends with them, read back through the official SDKs and
`providers.sdk.rate_headers` as the providers read them."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from itertools import pairwise
from typing import Any

import anthropic
import openai
import pytest

from fanout.providers.sdk import rate_headers
from fanout.providers.sim import SimConfig
from fanout.providers.sim_limits import SHAPES, make_budget
from fanout.sim_server import SimServer, main, start_server

USER: Any = [{"role": "user", "content": "说一句话。"}]


def admitted(
    shape: str, per_minute: float, window: float, until: float, step: float
) -> list[float]:
    """Times at which a client asking every `step` seconds is admitted, up to `until`."""
    b = make_budget(shape, per_minute, window)
    out = []
    now = 0.0
    while now < until:
        if b.wait(now, 1.0) == 0.0:
            b.commit(now, 1.0)
            out.append(now)
        now += step
    return out


def most_in_any(times: list[float], span: float) -> int:
    j, best = 0, 0
    for i, t in enumerate(times):
        while times[j] <= t - span:
            j += 1
        best = max(best, i - j + 1)
    return best


@pytest.mark.parametrize("shape", ["fixed", "bucket", "sliding"])
def test_each_shape_admits_a_window_at_once_then_the_rate(shape: str) -> None:
    """600/min over 10 s windows: 100 at once (the large burst), then 10 a second on
    average, whatever the shape: over a minute, a minute's budget plus at most the burst."""
    times = admitted(shape, 600.0, 10.0, 60.0, 0.005)
    assert times[99] == pytest.approx(99 * 0.005)  # the whole window's budget at once
    assert 600 <= len(times) <= 700


def test_the_shapes_differ_as_the_services_do() -> None:
    """Fixed: two windows' budgets back to back across a window's edge; sliding: never more
    than one window's in any span; bucket: the rate, evenly, once the burst is spent; GCRA:
    a burst of one second only."""
    fixed = admitted("fixed", 600.0, 10.0, 40.0, 0.002)
    sliding = admitted("sliding", 600.0, 10.0, 40.0, 0.002)
    bucket = admitted("bucket", 600.0, 10.0, 40.0, 0.002)
    gcra = admitted("gcra", 600.0, 10.0, 40.0, 0.002)
    assert most_in_any(sliding, 10.0) == 100
    assert max(b - a for a, b in pairwise(bucket[101:])) < 0.11
    assert gcra[9] == pytest.approx(9 * 0.002)  # a burst of one second's budget...
    assert gcra[10] > 0.09  # ...and no more
    # fixed windows follow the first call back to back: 100 at 0 s and 100 at 10 s
    assert [t for t in fixed if 9.9 < t < 10.2][:1] == [pytest.approx(10.0, abs=0.003)]
    assert len(fixed) == 400


@pytest.mark.parametrize("shape", SHAPES)
def test_a_cost_above_the_whole_budget_waits_for_a_whole_budget_not_forever(shape: str) -> None:
    b = make_budget(shape, 60.0, 2.0)
    b.commit(0.0, 1.0)
    wait = b.wait(0.0, 1000.0)
    assert 0.0 < wait < 61.0
    assert b.wait(wait + 0.001, 1000.0) == 0.0


@pytest.mark.parametrize("shape", SHAPES)
def test_state_reports_remaining_and_the_time_to_a_whole_budget(shape: str) -> None:
    b = make_budget(shape, 600.0, 10.0)
    whole, reset = b.state(0.0)
    assert reset == 0.0
    for _ in range(5):
        b.commit(0.0, 1.0)
    remaining, reset = b.state(0.0)
    assert remaining == whole - 5
    assert reset > 0.0


def test_a_bad_shape_is_refused_by_config_and_by_the_server_flags(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ValueError, match="limit_shape 'leaky'"):
        SimConfig(limit_shape="leaky")
    with pytest.raises(SystemExit) as exc:
        main(["--limit-shape", "leaky"])
    assert exc.value.code == 2
    assert "--limit-shape" in capsys.readouterr().err


@asynccontextmanager
async def serving(**kw: Any) -> AsyncIterator[SimServer]:
    server = await start_server(SimConfig(base_latency_s=0.001, jitter=0.0, **kw))
    try:
        yield server
    finally:
        await server.stop()


def test_openai_route_sends_x_ratelimit_headers_and_retry_after_on_429() -> None:
    async def go() -> None:
        async with serving(rpm=120, tpm=100_000, limit_shape="fixed", limit_window_s=2) as s:
            client = openai.AsyncOpenAI(base_url=s.url + "/v1", api_key="sk-a", max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model="sim-1", messages=USER
            )
            rate = rate_headers(raw.headers)
            assert rate is not None
            assert rate["requests_limit"] == 120
            assert rate["requests_remaining"] == 3  # 4 per 2 s window, one spent
            assert 0.0 < rate["requests_reset"] <= 2.0
            assert rate["tokens_limit"] == 100_000
            for _ in range(3):
                await client.chat.completions.create(model="sim-1", messages=USER)
            with pytest.raises(openai.RateLimitError) as exc:
                await client.chat.completions.create(model="sim-1", messages=USER)
            headers = exc.value.response.headers
            assert 0.0 < float(headers["retry-after"]) <= 2.0  # the window's end
            assert headers["x-ratelimit-remaining-requests"] == "0"
            await client.close()

    asyncio.run(go())


def test_anthropic_route_sends_anthropic_ratelimit_headers() -> None:
    async def go() -> None:
        async with serving(rpm=600, tpm=60_000, limit_shape="bucket", limit_window_s=6) as s:
            client = anthropic.AsyncAnthropic(base_url=s.url, api_key="b", max_retries=0)
            raw = await client.messages.with_raw_response.create(
                model="sim-1", max_tokens=50, messages=USER
            )
            headers = raw.headers
            assert "x-ratelimit-limit-requests" not in headers
            reset = datetime.datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
            assert reset.tzinfo is not None
            rate = rate_headers(headers)
            assert rate is not None
            assert rate["requests_limit"] == 600
            assert rate["requests_remaining"] == 59  # a bucket of 6 s of budget, one spent
            assert 0.0 <= rate["requests_reset"] <= 1.0
            assert rate["tokens_limit"] == 60_000
            assert rate["tokens_remaining"] < 6000
            await client.close()

    asyncio.run(go())


def test_no_rate_headers_when_asked() -> None:
    async def go() -> None:
        cfg = SimConfig(base_latency_s=0.001, jitter=0.0)
        server = await start_server(cfg, rpm=600, rate_headers=False)
        try:
            client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="k", max_retries=0)
            raw = await client.chat.completions.with_raw_response.create(
                model="sim-1", messages=USER
            )
            assert rate_headers(raw.headers) is None
            await client.close()
        finally:
            await server.stop()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-reset-requests": "6m0s"}, {"requests_reset": 360.0}),
        ({"x-ratelimit-reset-tokens": "1h2m3.5s"}, {"tokens_reset": 3723.5}),
        ({"x-ratelimit-reset-requests": "120ms"}, {"requests_reset": 0.12}),
        ({"x-ratelimit-reset-requests": "soon"}, None),
        ({"x-ratelimit-limit-requests": "-3"}, None),
        ({"anthropic-ratelimit-tokens-limit": "80000"}, {"tokens_limit": 80000.0}),
        ({"anthropic-ratelimit-requests-reset": "not a time"}, None),
        ({}, None),
    ],
)
def test_rate_headers_parse_or_are_left_out(
    headers: dict[str, str], expected: dict[str, float] | None
) -> None:
    assert rate_headers(headers) == expected
