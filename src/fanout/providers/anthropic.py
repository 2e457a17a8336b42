"""Anthropic Messages through the official `anthropic` SDK (see `SdkProvider`)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fanout.providers.base import Chunk, Completion, Request
from fanout.providers.openai import LOCAL_KEY
from fanout.providers.sdk import SdkProvider, rate_headers

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

JSON_HINT = "Answer with one JSON value only, no prose and no code fence."


class AnthropicProvider(SdkProvider):
    sdk = "anthropic"
    client_class = "AsyncAnthropic"
    # a local Anthropic-compatible server takes any key; without one the SDK refuses every
    # call ("Could not resolve authentication method")
    fallback_key = LOCAL_KEY

    def body(self, request: Request) -> dict[str, Any]:
        system = [m["content"] for m in request.messages if m.get("role") == "system"]
        messages = [m for m in request.messages if m.get("role") != "system"]
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
        }
        if request.json_mode or request.json_schema is not None:
            system.append(JSON_HINT)
        if system:
            body["system"] = "\n\n".join(str(s) for s in system)
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.json_schema is not None:
            body["output_config"] = {
                "format": {"type": "json_schema", "schema": request.json_schema}
            }
        for k, v in request.extra.items():
            body.setdefault(k, v)
        return body

    async def complete(self, request: Request) -> Completion:
        client = self._get()
        t0 = time.perf_counter()
        try:
            raw = await client.messages.with_raw_response.create(**self.body(request))
            msg = await raw.parse()
        except Exception as exc:
            raise self._mapped(exc) from exc
        text = "".join(getattr(b, "text", "") for b in msg.content if b.type == "text")
        return Completion(
            text=text,
            finish_reason=_finish(msg.stop_reason),
            input_tokens=msg.usage.input_tokens,
            output_tokens=msg.usage.output_tokens,
            model=msg.model or request.model,
            latency_s=time.perf_counter() - t0,
            rate=rate_headers(raw.headers),
        )

    async def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        client = self._get()
        t0 = time.perf_counter()
        parts: list[str] = []
        stop: str | None = None
        input_tokens = output_tokens = 0
        model = request.model
        try:
            events = await client.messages.create(**self.body(request), stream=True)
            rate = rate_headers(events.response.headers)
            async with events:
                async for ev in events:
                    kind = ev.type
                    if kind == "content_block_delta" and ev.delta.type == "text_delta":
                        parts.append(ev.delta.text)
                        yield Chunk(ev.delta.text)
                    elif kind == "message_start":
                        model = ev.message.model or model
                        input_tokens = ev.message.usage.input_tokens
                    elif kind == "message_delta":
                        stop = ev.delta.stop_reason or stop
                        output_tokens = ev.usage.output_tokens
        except Exception as exc:
            raise self._mapped(exc) from exc
        yield Completion(
            text="".join(parts),
            finish_reason=_finish(stop),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            model=model,
            latency_s=time.perf_counter() - t0,
            rate=rate,
        )


def _finish(reason: str | None) -> str:
    return "length" if reason == "max_tokens" else "stop"


def from_spec(
    name: str, spec: ProviderSpec, *, concurrency: int, env: Mapping[str, str] | None = None
) -> AnthropicProvider:
    from fanout.errors import ConfigError

    key = spec.api_key(env)
    if key is None and spec.base_url is None:
        raise ConfigError(
            f"provider {name!r} (anthropic) needs api_key_env naming the variable that holds "
            "your key (e.g. api_key_env: ANTHROPIC_API_KEY)"
        )
    return AnthropicProvider(
        name=name,
        api_key=key,
        base_url=anthropic_base_url(spec.base_url),
        pool=spec.concurrency or concurrency,
    )


def anthropic_base_url(url: str | None) -> str | None:
    """The SDK adds `/v1/messages` to its base URL: a URL written the OpenAI way, ending in
    `/v1`, would call `/v1/v1/messages`, so that `/v1` is dropped."""
    if url is None:
        return None
    trimmed = url.rstrip("/")
    return trimmed[: -len("/v1")] if trimmed.endswith("/v1") else url
