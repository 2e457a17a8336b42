"""OpenAI-compatible Chat Completions through the official `openai` SDK.

Works with OpenAI and anything that speaks its wire format (vLLM, Ollama, llama.cpp,
LM Studio, the fanout sim-server). The SDK's own retries are off: the engine is the one
retry loop. The transport is aiohttp with a connection pool sized to the concurrency and
kept alive, which costs a fraction of the CPU per call of the default one under fan-out.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError
from fanout.providers.base import Chunk, Completion, Request, chat_body
from fanout.providers.sdk import DEFAULT_POOL, SDK_TIMEOUT_S, SdkProvider

if TYPE_CHECKING:
    from fanout.providerspec import ProviderSpec

LOCAL_KEY = "not-needed"  # local servers (Ollama, vLLM...) accept any key


class OpenAIProvider(SdkProvider):
    sdk = "openai"

    def __init__(
        self,
        *,
        name: str = "openai",
        api_key: str | None,
        base_url: str | None = None,
        pool: int = DEFAULT_POOL,
    ) -> None:
        super().__init__(name=name, api_key=api_key or LOCAL_KEY, base_url=base_url, pool=pool)

    def _make_client(self, module: Any, http: Any) -> Any:
        return module.AsyncOpenAI(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=SDK_TIMEOUT_S,
            http_client=http,
        )

    def body(self, request: Request) -> dict[str, Any]:
        return chat_body(request)

    async def complete(self, request: Request) -> Completion:
        client = self._get()
        t0 = time.perf_counter()
        try:
            resp = await client.chat.completions.create(**self.body(request))
        except Exception as exc:
            raise self._mapped(exc) from exc
        choice = resp.choices[0] if resp.choices else None
        usage = resp.usage
        return Completion(
            text=(choice.message.content or "") if choice is not None else "",
            finish_reason=_finish(choice.finish_reason if choice is not None else None),
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=resp.model or request.model,
            latency_s=time.perf_counter() - t0,
        )

    async def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        client = self._get()
        t0 = time.perf_counter()
        body = {**self.body(request), "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        model = request.model
        try:
            stream = await client.chat.completions.create(**body)
            async with stream:
                async for chunk in stream:
                    model = chunk.model or model
                    if chunk.usage is not None:
                        usage = chunk.usage
                    for choice in chunk.choices:
                        if choice.finish_reason:
                            finish = choice.finish_reason
                        text = choice.delta.content if choice.delta else None
                        if text:
                            parts.append(text)
                            yield Chunk(text)
        except Exception as exc:
            raise self._mapped(exc) from exc
        yield Completion(
            text="".join(parts),
            finish_reason=_finish(finish),
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=model,
            latency_s=time.perf_counter() - t0,
        )


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def from_spec(
    name: str, spec: ProviderSpec, *, concurrency: int, env: Mapping[str, str] | None = None
) -> OpenAIProvider:
    """Build from a fanout.yaml entry. The OpenAI API itself needs a key; a custom
    base_url (a local server) may do without one."""
    key = spec.api_key(env)
    if key is None and spec.base_url is None:
        raise ConfigError(
            f"provider {name!r} (openai) needs api_key_env naming the variable that holds "
            "your key (e.g. api_key_env: OPENAI_API_KEY), or a base_url for a local server"
        )
    return OpenAIProvider(
        name=name, api_key=key, base_url=spec.base_url, pool=spec.concurrency or concurrency
    )
