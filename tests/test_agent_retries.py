"""Every built-in agent, answered badly by the simulator once (too short, cut off, truncated
at the token limit, no table, invalid JSON, the wrong schema): its checks catch the answer
and the engine makes the one content retry it promises (the problem quoted back for a
bad answer, twice the tokens for a truncated one); answered badly every time, the task
fails after that one retry with the check's own message."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable

import pytest

from fanout import CallableProvider, Engine, Request, Result, RetryPolicy, SimConfig, SimProvider
from fanout.agents import Blueprint, builtin_blueprints
from fanout.providers.base import Completion
from tests.test_blueprints import ZH_INPUTS

HINT = "Your previous answer could not be used: "
Spoil = Callable[[Blueprint, Completion], Completion]


def too_short(bp: Blueprint, c: Completion) -> Completion:
    assert bp.validators is not None
    assert bp.validators.min_chars
    return dataclasses.replace(c, text=c.text.strip()[: bp.validators.min_chars // 2] + "。")


def cut_off(bp: Blueprint, c: Completion) -> Completion:
    return dataclasses.replace(c, text=c.text.rstrip() + "\n\n接下来我们看……")


def at_the_token_limit(bp: Blueprint, c: Completion) -> Completion:
    return dataclasses.replace(c, text=c.text[: len(c.text) // 2], finish_reason="length")


def no_table(bp: Blueprint, c: Completion) -> Completion:
    prose = [x for x in c.text.splitlines() if not x.lstrip().startswith("|")]
    return dataclasses.replace(c, text="\n".join(prose))


def not_json(bp: Blueprint, c: Completion) -> Completion:
    return dataclasses.replace(c, text="好的，下面是答案：" + c.text)


def wrong_schema(bp: Blueprint, c: Completion) -> Completion:
    data = json.loads(c.text)
    assert bp.schema is not None
    first_required = bp.schema["required"][0]
    del data[first_required]
    return dataclasses.replace(c, text=json.dumps(data, ensure_ascii=False))


AGENTS = builtin_blueprints()
MARKDOWN = sorted(n for n, bp in AGENTS.items() if bp.output != "json")
JSON = sorted(n for n, bp in AGENTS.items() if bp.output == "json")
CASES: list[tuple[str, str, Spoil]] = [
    *((n, "too short", too_short) for n in MARKDOWN if AGENTS[n].validators),
    *((n, "cut off", cut_off) for n in MARKDOWN),
    *((n, "at the token limit", at_the_token_limit) for n in sorted(AGENTS)),
    *((n, "no table", no_table) for n in MARKDOWN if AGENTS[n].validators),
    *((n, "not JSON", not_json) for n in JSON),
    *((n, "wrong schema", wrong_schema) for n in JSON),
]
CASES = [
    c
    for c in CASES
    if c[1] != "no table" or (AGENTS[c[0]].validators and AGENTS[c[0]].validators.require_table)  # type: ignore[union-attr]
]


def the_simulator(bp: Blueprint) -> SimProvider:
    """The simulator sized to answer `bp` well (Chinese: about a character a token)."""
    v = bp.validators
    if bp.output == "json" or v is None or not v.min_chars or not v.max_chars:
        return SimProvider(SimConfig(base_latency_s=0, jitter=0))
    size = (v.min_chars + v.max_chars) // 2
    return SimProvider(
        SimConfig(base_latency_s=0, jitter=0, min_output_tokens=size, max_output_tokens=size)
    )


class BadFirst:
    """The simulator's answers, spoiled on the first `bad` attempts of each task."""

    def __init__(self, bp: Blueprint, spoil: Spoil, bad: int) -> None:
        self.bp, self.spoil, self.bad = bp, spoil, bad
        self.sim = the_simulator(bp)
        self.requests: list[Request] = []
        self.spoiled: list[str] = []

    async def __call__(self, req: Request) -> Completion:
        self.requests.append(req)
        good = await self.sim.complete(req)
        if req.attempt > self.bad:
            return good
        bad = self.spoil(self.bp, good)
        self.spoiled.append(bad.text)
        return bad


def run(bp: Blueprint, provider: BadFirst) -> Result:
    async def main() -> Result:
        async with Engine(
            providers=CallableProvider(provider, name="sim", threaded=False),
            retry=RetryPolicy(attempts=5, backoff_base_s=0),
        ) as engine:
            done = await engine.run([bp.task(ZH_INPUTS)])
            return (await done.results())[0]

    return asyncio.run(main())


@pytest.mark.parametrize(("name", "how", "spoil"), CASES, ids=[f"{n}-{h}" for n, h, _ in CASES])
def test_a_bad_first_answer_is_caught_and_retried_once_as_promised(
    name: str, how: str, spoil: Spoil
) -> None:
    bp = AGENTS[name]
    provider = BadFirst(bp, spoil, bad=1)
    r = run(bp, provider)
    assert r.ok, r.error
    assert r.attempts == 2
    assert bp.check(r.text or "") is None
    first, second = provider.requests
    if how == "at the token limit":  # more room, no hint: nothing was wrong but the room
        assert first.max_tokens
        assert second.max_tokens == 2 * first.max_tokens
        assert second.messages == first.messages
    else:  # the check's own words, quoted back
        problem = bp.check(provider.spoiled[0])
        if bp.output == "json" and how == "not JSON":
            assert problem is None or problem.startswith("the answer is not valid JSON")
            assert str(second.messages[-1]["content"]).startswith(
                HINT + "the answer is not valid JSON ("
            )
        else:
            assert problem is not None
            assert second.messages[-1]["content"] == (
                f"{HINT}{problem}. Answer again in full, in the required format."
            )
        assert second.messages[:-1] == first.messages
        assert second.max_tokens == first.max_tokens


@pytest.mark.parametrize(("name", "how", "spoil"), CASES, ids=[f"{n}-{h}" for n, h, _ in CASES])
def test_an_answer_bad_every_time_fails_after_the_one_content_retry(
    name: str, how: str, spoil: Spoil
) -> None:
    bp = AGENTS[name]
    provider = BadFirst(bp, spoil, bad=99)
    r = run(bp, provider)
    assert not r.ok
    assert r.attempts == 2  # attempts=5 allowed: a content fault is retried once only
    assert r.error is not None
    assert r.error.error_class == "content"
    if how == "at the token limit":
        assert r.error.kind == "truncated"
    else:
        assert r.error.kind == "invalid_output"
        problem = bp.check(provider.spoiled[-1])
        if not (bp.output == "json" and how == "not JSON"):
            assert r.error.message == problem


def test_every_agent_and_every_way_to_answer_badly_is_covered() -> None:
    covered: dict[str, set[str]] = {}
    for name, how, _ in CASES:
        covered.setdefault(name, set()).add(how)
    assert set(covered) == set(AGENTS)
    for name in JSON:
        assert covered[name] == {"not JSON", "wrong schema", "at the token limit"}
    for name in MARKDOWN:
        assert {"cut off", "at the token limit"} <= covered[name]
        if AGENTS[name].validators and AGENTS[name].validators.min_chars:  # type: ignore[union-attr]
            assert "too short" in covered[name]
