"""The sim-server in-process, driven by the official `openai` and `anthropic` SDKs exactly as an
application would use them (plain, streaming, structured output, rate limits, faults, stats)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiohttp
import anthropic
import openai
import pytest
from pydantic import BaseModel, Field

from fanout.providers.base import Request
from fanout.providers.sim import SimConfig, SimProvider
from fanout.sim_server import SimServer, main, request_hash, start_server

T = TypeVar("T")
FAST: dict[str, Any] = {"base_latency_s": 0.001, "jitter": 0.0}
USER: Any = [{"role": "user", "content": "Explain recursion with an example."}]


def run(aw: Awaitable[T]) -> T:
    async def main() -> T:
        return await aw

    return asyncio.run(main())


@asynccontextmanager
async def serving(
    rpm: float | None = None, tpm: float | None = None, stats_file: Path | None = None, **kw: Any
) -> AsyncIterator[SimServer]:
    server = await start_server(
        SimConfig(**{**FAST, **kw}), rpm=rpm, tpm=tpm, stats_file=stats_file
    )
    try:
        yield server
    finally:
        await server.stop()


def oai(server: SimServer, key: str = "sk-test", **kw: Any) -> openai.AsyncOpenAI:
    kw.setdefault("max_retries", 0)
    return openai.AsyncOpenAI(base_url=server.url + "/v1", api_key=key, **kw)


def ant(server: SimServer, key: str = "test", **kw: Any) -> anthropic.AsyncAnthropic:
    kw.setdefault("max_retries", 0)
    return anthropic.AsyncAnthropic(base_url=server.url, api_key=key, **kw)


async def in_process(messages: Any, **kw: Any) -> str:
    done = await SimProvider(SimConfig(**FAST)).complete(Request("sim-1", messages, **kw))
    return done.text


class Score(BaseModel):
    total: int = Field(ge=0, le=100)
    verdict: Literal["mastered", "partial", "not_understood"]
    feedback: str
    points: list[str]


# -- OpenAI Chat Completions -----------------------------------------------------------


def test_openai_plain_answer_is_the_in_process_simulators() -> None:
    async def main() -> None:
        async with serving() as server, oai(server) as client:
            r = await client.chat.completions.create(model="sim-1", messages=USER)
            assert r.choices[0].message.content == await in_process(USER)
            assert r.choices[0].finish_reason == "stop"
            assert r.choices[0].message.role == "assistant"
            assert r.model == "sim-1"
            assert r.id.startswith("chatcmpl-")
            assert r.created > 0
            assert r.usage is not None
            assert r.usage.prompt_tokens > 0
            assert r.usage.completion_tokens > 10
            assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens

    run(main())


def test_openai_stream_equals_the_plain_answer_with_usage() -> None:
    async def main() -> None:
        async with serving() as server, oai(server) as client:
            plain = await client.chat.completions.create(model="sim-1", messages=USER)
            stream = await client.chat.completions.create(
                model="sim-1",
                messages=USER,
                stream=True,
                stream_options={"include_usage": True},
            )
            parts, finishes, usages, ids = [], [], [], set()
            async for chunk in stream:
                ids.add(chunk.id)
                assert chunk.object == "chat.completion.chunk"
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
                    finishes.append(chunk.choices[0].finish_reason)
                if chunk.usage is not None:
                    usages.append(chunk.usage)
            assert "".join(parts) == plain.choices[0].message.content
            assert len(parts) > 2
            assert finishes[-1] == "stop"
            assert finishes[:-1] == [None] * (len(finishes) - 1)
            assert usages == [plain.usage]
            assert len(ids) == 1
            # without include_usage no usage chunk is sent
            bare = await client.chat.completions.create(model="sim-1", messages=USER, stream=True)
            assert all([c.usage is None and c.choices async for c in bare])

    run(main())


def test_openai_max_tokens_cuts_with_finish_reason_length() -> None:
    async def main() -> None:
        async with serving() as server, oai(server) as client:
            for name in ("max_tokens", "max_completion_tokens"):
                kw: Any = {name: 5}
                r = await client.chat.completions.create(model="sim-1", messages=USER, **kw)
                assert r.choices[0].finish_reason == "length"
                assert r.usage is not None
                assert 0 < r.usage.completion_tokens <= 5
                s = await client.chat.completions.create(
                    model="sim-1",
                    messages=USER,
                    stream=True,
                    **kw,
                )
                chunks = [c async for c in s]
                text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert text == r.choices[0].message.content
                assert chunks[-1].choices[0].finish_reason == "length"

    run(main())


def test_openai_structured_output_validates() -> None:
    async def main() -> None:
        async with serving() as server, oai(server) as client:
            parsed = await client.chat.completions.parse(
                model="sim-1",
                messages=USER,
                response_format=Score,
            )
            score = parsed.choices[0].message.parsed
            assert isinstance(score, Score)
            assert 0 <= score.total <= 100
            raw = await client.chat.completions.create(
                model="sim-1",
                messages=USER,
                response_format={
                    "type": "json_schema",
                    "json_schema": {"name": "score", "schema": Score.model_json_schema()},
                },
            )
            Score.model_validate_json(raw.choices[0].message.content or "")
            obj = await client.chat.completions.create(
                model="sim-1",
                messages=USER,
                response_format={"type": "json_object"},
            )
            assert isinstance(json.loads(obj.choices[0].message.content or ""), dict)

    run(main())


def test_openai_on_the_aiohttp_transport() -> None:
    async def main() -> None:
        async with (
            serving() as server,
            oai(server, http_client=openai.DefaultAioHttpClient()) as client,
        ):
            r = await client.chat.completions.create(model="sim-1", messages=USER)
            s = await client.chat.completions.create(model="sim-1", messages=USER, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in s if c.choices])
            assert text == r.choices[0].message.content == await in_process(USER)

    run(main())


# -- Anthropic Messages ----------------------------------------------------------------


def test_anthropic_plain_answer_is_the_in_process_simulators() -> None:
    async def main() -> None:
        async with serving() as server, ant(server) as client:
            blocks: Any = [
                {"role": "user", "content": [{"type": "text", "text": USER[0]["content"]}]}
            ]
            m = await client.messages.create(
                model="sim-1",
                max_tokens=1024,
                system="You are a patient teacher.",
                messages=blocks,
            )
            expected = await in_process(
                [{"role": "system", "content": "You are a patient teacher."}, *USER]
            )
            assert m.content[0].type == "text"
            assert m.content[0].text == expected
            assert m.stop_reason == "end_turn"
            assert m.role == "assistant"
            assert m.model == "sim-1"
            assert m.id.startswith("msg_")
            assert m.usage.input_tokens > 0
            assert m.usage.output_tokens > 10
            short = await client.messages.create(model="sim-1", max_tokens=5, messages=USER)
            assert short.stop_reason == "max_tokens"
            assert short.usage.output_tokens <= 5

    run(main())


def test_anthropic_streaming_events_and_helper() -> None:
    async def main() -> None:
        async with serving() as server, ant(server) as client:
            plain = await client.messages.create(model="sim-1", max_tokens=1024, messages=USER)
            async with client.messages.stream(
                model="sim-1",
                max_tokens=1024,
                messages=USER,
            ) as stream:
                text = "".join([t async for t in stream.text_stream])
                final = await stream.get_final_message()
            assert plain.content[0].type == "text"
            assert text == plain.content[0].text
            assert final.usage.output_tokens == plain.usage.output_tokens
            assert final.usage.input_tokens == plain.usage.input_tokens
            assert final.stop_reason == "end_turn"
            raw = await client.messages.create(
                model="sim-1",
                max_tokens=1024,
                messages=USER,
                stream=True,
            )
            kinds = [e.type async for e in raw]
            assert kinds[:2] == ["message_start", "content_block_start"]
            assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
            assert set(kinds[2:-3]) == {"content_block_delta"}

    run(main())


def test_anthropic_structured_output_and_forced_tool() -> None:
    async def main() -> None:
        async with serving() as server, ant(server) as client:
            parsed = await client.messages.parse(
                model="sim-1",
                max_tokens=1024,
                messages=USER,
                output_format=Score,
            )
            assert isinstance(parsed.parsed_output, Score)
            tool: Any = {
                "name": "score",
                "description": "d",
                "input_schema": Score.model_json_schema(),
            }
            m = await client.messages.create(
                model="sim-1",
                max_tokens=1024,
                messages=USER,
                tools=[tool],
                tool_choice={"type": "tool", "name": "score"},
            )
            assert m.stop_reason == "tool_use"
            assert m.content[0].type == "tool_use"
            assert m.content[0].name == "score"
            Score.model_validate(m.content[0].input)
            async with client.messages.stream(
                model="sim-1",
                max_tokens=1024,
                messages=USER,
                tools=[tool],
                tool_choice={"type": "any"},
            ) as stream:
                final = await stream.get_final_message()
            assert final.content[0].type == "tool_use"
            assert final.content[0].input == m.content[0].input
            assert final.stop_reason == "tool_use"

    run(main())


def test_anthropic_aiohttp_transport_and_models_for_both_sdks() -> None:
    async def main() -> None:
        async with (
            serving() as server,
            ant(server, http_client=anthropic.DefaultAioHttpClient()) as client,
            oai(server) as oclient,
        ):
            m = await client.messages.create(model="sim-1", max_tokens=1024, messages=USER)
            assert m.content[0].type == "text"
            assert m.content[0].text == await in_process(USER)
            assert [x.id async for x in client.models.list()] == ["sim-1"]
            assert (await client.models.retrieve("sim-1")).display_name
            assert [x.id async for x in oclient.models.list()] == ["sim-1"]
            assert (await oclient.models.retrieve("gpt-x")).id == "gpt-x"

    run(main())


# -- rate limits -----------------------------------------------------------------------


def test_rpm_answers_real_429s_per_key_with_headers() -> None:
    async def main() -> None:
        async with (
            serving(rpm=1) as server,  # a burst of one request, then one a minute
            oai(server) as client,
            oai(server, key="sk-other") as other,
            ant(server) as aclient,
        ):
            ok = await client.chat.completions.with_raw_response.create(
                model="sim-1", messages=USER
            )
            assert ok.headers["x-ratelimit-limit-requests"] == "1"
            assert ok.headers["x-ratelimit-remaining-requests"] == "0"
            assert ok.headers["x-ratelimit-reset-requests"].endswith("s")
            with pytest.raises(openai.RateLimitError) as err:
                await client.chat.completions.create(model="sim-1", messages=USER)
            assert err.value.status_code == 429
            assert 0 < float(err.value.response.headers["retry-after"]) <= 60
            assert float(err.value.response.headers["retry-after-ms"]) > 0
            assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
            assert isinstance(err.value.body, dict)
            assert err.value.body["code"] == "rate_limit_exceeded"
            with pytest.raises(openai.RateLimitError):  # the stream is refused before it starts
                await client.chat.completions.create(model="sim-1", messages=USER, stream=True)
            # other keys have their own budgets
            await other.chat.completions.create(model="sim-1", messages=USER)
            await aclient.messages.create(model="sim-1", max_tokens=99, messages=USER)
            with pytest.raises(anthropic.RateLimitError) as aerr:
                await aclient.messages.create(model="sim-1", max_tokens=99, messages=USER)
            assert float(aerr.value.response.headers["retry-after"]) > 0
            body: Any = aerr.value.body
            assert body["type"] == "error"
            assert body["error"]["type"] == "rate_limit_error"
            stats = server.stats()
            assert stats["rejected_429"] == 3
            assert stats["completed_total"] == 3
            assert stats["requests_total"] == 6

    run(main())


def test_sdk_retries_honour_the_servers_retry_after() -> None:
    async def main() -> None:
        async with (
            serving(rpm=600) as server,  # bursts of 10, then one every 0.1 s
            oai(server, max_retries=5) as c,
            ant(server, key="sk-test", max_retries=5) as a,  # the same key: the same budget
        ):
            for i in range(8):
                await c.chat.completions.create(model="sim-1", messages=USER, seed=i)
                await a.messages.create(model="sim-1", max_tokens=50, messages=USER)
            stats = server.stats()
            assert stats["completed_total"] == 16
            assert stats["rejected_429"] > 0
            assert stats["requests_total"] == 16 + stats["rejected_429"]

    run(main())


def test_tpm_limits_tokens() -> None:
    async def main() -> None:
        async with serving(tpm=100) as server, oai(server) as client:
            ok = await client.chat.completions.with_raw_response.create(
                model="sim-1", messages=USER
            )
            assert ok.headers["x-ratelimit-limit-tokens"] == "100"
            with pytest.raises(openai.RateLimitError) as err:
                await client.chat.completions.create(model="sim-1", messages=USER)
            assert float(err.value.response.headers["retry-after"]) > 1
            assert "tokens/minute" in err.value.message

    run(main())


# -- injected faults -------------------------------------------------------------------


def test_injected_5xx_and_429_surface_as_the_sdks_errors() -> None:
    async def main() -> None:
        for kind in ("500", "529", "429"):
            async with serving(faults={kind: 1.0}) as server, oai(server) as c, ant(server) as a:
                for stream in (False, True):
                    with pytest.raises(openai.APIStatusError) as oerr:
                        await c.chat.completions.create(model="sim-1", messages=USER, stream=stream)
                    assert oerr.value.status_code == int(kind)
                    with pytest.raises(anthropic.APIStatusError) as aerr:
                        await a.messages.create(
                            model="sim-1",
                            max_tokens=99,
                            messages=USER,
                            stream=stream,
                        )
                    assert aerr.value.status_code == int(kind)
                expected_o = {"500": openai.InternalServerError, "529": openai.InternalServerError}
                expected_a = {
                    "500": anthropic.InternalServerError,
                    "529": anthropic.OverloadedError,
                }
                if kind == "429":
                    assert isinstance(oerr.value, openai.RateLimitError)
                    assert isinstance(aerr.value, anthropic.RateLimitError)
                    assert oerr.value.response.headers["retry-after"] == "1"
                else:
                    assert isinstance(oerr.value, expected_o[kind])
                    assert isinstance(aerr.value, expected_a[kind])
                if kind == "529":
                    assert isinstance(aerr.value.body, dict)
                    assert aerr.value.body["error"]["type"] == "overloaded_error"
                stats = server.stats()
                assert stats["completed_total"] == 0
                assert stats["faults"] == {kind: 4}
                assert stats["rejected_429"] == (4 if kind == "429" else 0)

    run(main())


def test_timeout_fault_hangs_until_the_client_gives_up() -> None:
    async def main() -> None:
        async with (
            serving(faults={"timeout": 1.0}) as server,
            oai(server, timeout=0.3) as c,
            ant(server, timeout=0.3) as a,
        ):
            with pytest.raises(openai.APITimeoutError):
                await c.chat.completions.create(model="sim-1", messages=USER)
            with pytest.raises(anthropic.APITimeoutError):
                await a.messages.create(model="sim-1", max_tokens=99, messages=USER)
            s = await c.chat.completions.create(model="sim-1", messages=USER, stream=True)
            got: list[str] = []

            async def drain() -> None:
                async for chunk in s:
                    got.append(chunk.choices[0].delta.content or "")

            with pytest.raises(openai.APITimeoutError):  # a stream goes idle after its first chunk
                await drain()
            assert "".join(got)
            assert server.stats()["completed_total"] == 0

    run(main())


def test_truncated_and_empty_faults() -> None:
    async def main() -> None:
        async with serving(faults={"truncated": 1.0}) as server, oai(server) as c, ant(server) as a:
            full = await in_process(USER)
            r = await c.chat.completions.create(model="sim-1", messages=USER)
            assert r.choices[0].finish_reason == "length"
            assert full.startswith(r.choices[0].message.content or "?")
            assert r.choices[0].message.content != full
            m = await a.messages.create(model="sim-1", max_tokens=1024, messages=USER)
            assert m.stop_reason == "max_tokens"
        async with serving(faults={"empty": 1.0}) as server, oai(server) as c, ant(server) as a:
            r = await c.chat.completions.create(model="sim-1", messages=USER)
            assert r.choices[0].message.content == ""
            assert r.usage is not None
            assert r.usage.completion_tokens == 0
            m = await a.messages.create(model="sim-1", max_tokens=1024, messages=USER)
            assert m.content == []
            async with a.messages.stream(model="sim-1", max_tokens=99, messages=USER) as s:
                assert [t async for t in s.text_stream] == []

    run(main())


def test_a_resent_body_draws_its_fault_anew() -> None:
    async def main() -> None:
        async with serving(faults={"500": 0.5}, seed=3) as server, oai(server) as c:
            outcomes: list[str] = []
            for _ in range(40):
                try:
                    await c.chat.completions.create(model="sim-1", messages=USER)
                    outcomes.append("ok")
                except openai.InternalServerError:
                    outcomes.append("500")
            assert {"ok", "500"} <= set(outcomes)
            assert list(server.stats()["by_request_hash"].values()) == [outcomes.count("ok")]

    run(main())


# -- stats -----------------------------------------------------------------------------


def test_stats_count_completions_by_the_hash_of_the_canonical_body() -> None:
    body = {
        "model": "sim-1",
        "messages": [{"role": "user", "content": "解释递归"}],
        "max_tokens": 50,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    assert request_hash(body) == digest

    async def main() -> None:
        async with serving() as server, aiohttp.ClientSession() as http:
            for _ in range(2):
                async with http.post(server.url + "/v1/chat/completions", json=body) as r:
                    assert r.status == 200
            async with http.post(server.url + "/v1/messages", json=body) as r:
                assert r.status == 200
                assert (await r.json())["type"] == "message"
            async with http.get(server.url + "/stats") as r:
                stats = await r.json()
            assert stats["by_request_hash"] == {digest: 3}
            assert stats["requests_total"] == stats["completed_total"] == 3
            assert stats["rejected_429"] == 0
            async with http.post(server.url + "/stats/reset") as r:
                assert r.status == 200
            async with http.get(server.url + "/stats") as r:
                stats = await r.json()
            assert stats["by_request_hash"] == {}
            assert stats["requests_total"] == stats["completed_total"] == 0

    run(main())


def test_stats_file_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "state" / "stats.json"

    async def main() -> None:
        async with serving(stats_file=path) as server, oai(server) as c:
            await c.chat.completions.create(model="sim-1", messages=USER)
            await c.chat.completions.create(model="sim-1", messages=USER, max_tokens=9)
            for _ in range(200):  # written soon after each completion, before any shutdown
                if path.exists() and json.loads(path.read_text())["completed_total"] == 2:
                    break
                await asyncio.sleep(0.01)
            assert json.loads(path.read_text())["completed_total"] == 2
            first = server.stats()
        async with serving(stats_file=path) as server, oai(server) as c:
            assert {k: v for k, v in server.stats().items() if k != "faults"} == {
                k: v for k, v in first.items() if k != "faults"
            }
            await c.chat.completions.create(model="sim-1", messages=USER)
            assert sorted(server.stats()["by_request_hash"].values()) == [1, 2]
        saved = json.loads(path.read_text())
        assert saved["completed_total"] == 3
        assert saved["requests_total"] == 3
        assert not list(path.parent.glob("*.tmp"))
        async with serving(stats_file=path) as server:
            server.reset_stats()
        assert json.loads(path.read_text())["by_request_hash"] == {}

    run(main())


def test_a_broken_stats_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "stats.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="stats file"):
        run(start_server(SimConfig(), stats_file=path))


# -- bad requests, keys, CLI -----------------------------------------------------------


def test_bad_requests_get_400_in_each_apis_shape() -> None:
    async def main() -> None:
        async with serving() as server, aiohttp.ClientSession() as http, oai(server) as c:
            url = server.url
            async with http.post(url + "/v1/chat/completions", data=b"{not json") as r:
                assert r.status == 400
                assert (await r.json())["error"]["type"] == "invalid_request_error"
            no_max = {"model": "sim-1", "messages": USER}
            async with http.post(url + "/v1/messages", json=no_max) as r:
                assert r.status == 400
                err = await r.json()
                assert err["type"] == "error"
                assert "max_tokens" in err["error"]["message"]
            async with http.get(url + "/v1/nothing") as r:
                assert r.status == 404
                assert "error" in await r.json()
            with pytest.raises(openai.BadRequestError):
                await c.chat.completions.create(model="sim-1", messages=[])
            with pytest.raises(openai.BadRequestError):
                await c.chat.completions.create(model="sim-1", messages=USER, max_tokens=0)
            assert server.stats()["requests_total"] == 4

    run(main())


def test_keys_are_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-0123456789"

    async def main() -> None:
        async with serving(faults={"500": 0.5}) as server, oai(server, key=secret) as c:
            for _ in range(6):
                with suppress(openai.InternalServerError):
                    await c.chat.completions.create(model="sim-1", messages=USER)

    with caplog.at_level(logging.DEBUG):
        run(main())
    assert secret not in caplog.text
    assert "recursion" not in caplog.text


@pytest.mark.parametrize(
    "argv", [["--faults", "404=0.1"], ["--latency", "soon"], ["--rpm", "0"], ["--tpm", "x"]]
)
def test_main_rejects_bad_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "fanout sim-server" in capsys.readouterr().err
