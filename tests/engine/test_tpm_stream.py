"""TPM reconciled with the usage a streamed answer reports only at its end (issue 9).

A call is charged its estimate (prompt + output limit) against the TPM budget when it
starts; a streamed answer says what it used in its last event (OpenAI's usage chunk with
`stream_options.include_usage`, Anthropic's `message_delta`). The engine must give back the
difference then, or a generous output limit would hold back calls the budget admits. Here
through the official SDKs against a sim-server over loopback, streaming (an idle timeout
is set), with an output limit far above the answers.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fanout import Engine, ProviderLimits, Task
from fanout.providers.anthropic import AnthropicProvider
from fanout.providers.openai import OpenAIProvider
from fanout.providers.sim import SimConfig
from fanout.sim_server import start_server

TPM = 600.0  # 0.1 s of budget per token: an unreconciled estimate shows as minutes
MAX_TOKENS = 4000


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_streamed_answers_usage_replaces_its_estimate(api: str) -> None:
    async def main() -> None:
        # no rate headers: the budget stays the one configured here
        server = await start_server(
            SimConfig(base_latency_s=0.01, per_token_s=0.0, jitter=0.0), rate_headers=False
        )
        try:
            if api == "openai":
                provider: Any = OpenAIProvider(api_key="sk-tpm", base_url=server.url + "/v1")
            else:
                provider = AnthropicProvider(api_key="sk-tpm", base_url=server.url)
            async with Engine(
                providers={api: provider},
                model="sim-1",
                concurrency=1,
                idle_timeout=30.0,  # answers are streamed
                max_tokens=MAX_TOKENS,
                limits={api: ProviderLimits(tpm=TPM, adaptive=False)},
            ) as engine:
                loop = asyncio.get_running_loop()
                before = loop.time()
                run = engine.submit([Task("用一段话解释递归。", key="递归", provider=api)])
                await run.wait()
                after = loop.time()
                (result,) = await run.results()
                meter = engine.provider_meters[f"{api}:sim-1"]
        finally:
            await server.stop()
        assert result.ok
        assert result.text
        used = result.input_tokens + result.output_tokens
        assert 0 < result.output_tokens < MAX_TOKENS // 4  # the estimate was far too high
        assert meter.tpm is not None
        per_token = 60.0 / TPM
        # charged once at the start (between before and after), then corrected to `used`
        assert before + used * per_token <= meter.tpm.tat <= after + used * per_token

    asyncio.run(main())
