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
from fanout.providers.base import Chunk, Completion, Request
from fanout.providers.httperrors import from_sdk_error

if TYPE_CHECKING:
    from fanout.providerspec import ProviderSpec

DEFAULT_POOL = 64
KEEPALIVE_S = 60.0
SDK_TIMEOUT_S = 3600.0  # the engine enforces attempt and idle timeouts itself
LOCAL_KEY = "not-needed"  # local servers (Ollama, vLLM...) accept any key


class OpenAIProvider:
    streams = True

    def __init__(
        self,
        *,
        name: str = "openai",
        api_key: str | None,
        base_url: str | None = None,
        pool: int = DEFAULT_POOL,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._api_key = api_key or LOCAL_KEY
        self._pool = max(1, pool)
        self._client: Any = None

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r})"

    def _get(self) -> Any:
        if self._client is None:
            import httpx2
            import openai

            http = openai.DefaultAioHttpClient(
                limits=httpx2.Limits(
                    max_connections=self._pool,
                    max_keepalive_connections=self._pool,
                    keepalive_expiry=KEEPALIVE_S,
                ),
                timeout=SDK_TIMEOUT_S,
            )
            self._client = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                max_retries=0,
                timeout=SDK_TIMEOUT_S,
                http_client=http,
            )
        return self._client

    def limiter_key(self, model: str) -> str:
        return f"{self.name}:{model}"

    def body(self, request: Request) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
        }
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": False},
            }
        elif request.json_mode:
            body["response_format"] = {"type": "json_object"}
        for k, v in request.extra.items():
            body.setdefault(k, v)
        return body

    async def complete(self, request: Request) -> Completion:
        client = self._get()
        t0 = time.perf_counter()
        try:
            resp = await client.chat.completions.create(**self.body(request))
        except Exception as exc:
            raise _mapped(exc, self.name) from exc
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
            raise _mapped(exc, self.name) from exc
        yield Completion(
            text="".join(parts),
            finish_reason=_finish(finish),
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
            model=model,
            latency_s=time.perf_counter() - t0,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _finish(reason: str | None) -> str:
    return "length" if reason == "length" else "stop"


def _mapped(exc: Exception, name: str) -> Exception:
    import openai

    if isinstance(exc, openai.OpenAIError):
        return from_sdk_error(exc, name)
    return exc


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
