"""OpenAI-compatible Chat Completions through the official `openai` SDK.

Works with OpenAI and anything that speaks its wire format (vLLM, Ollama, llama.cpp,
LM Studio, the fanout sim-server). The SDK's own retries are off: the engine is the one
retry loop. The transport is aiohttp with a connection pool sized to the concurrency and
kept alive, which costs a fraction of the CPU per call of the default one under fan-out.

The SDK client is built once and configured as usual (base URL, key, its aiohttp transport).
A plain call is then a JSON POST on that client's HTTP client with the SDK's headers
(`SdkProvider._post_json`) and its answer is read with `json.loads`: under fan-out
`chat.completions.create` costs more CPU than the HTTP call itself, because it re-walks
the body against the SDK's TypedDict annotations (ours is already the wire format), builds
each request through its options, URL and header merging, and builds the answer into
pydantic models field by field, of which we need four (`bench/http_fanout.py`: about
1.2 ms of CPU per call through `create`, about 0.5 ms this way). A stream goes through the
client's generic `post` (no body transformation) and yields the SDK's typed chunks.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

from fanout.errors import ConfigError, ServerError
from fanout.providers.base import Chunk, Completion, Request, chat_body
from fanout.providers.sdk import MAX_MESSAGE, SdkProvider, rate_headers

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

LOCAL_KEY = "not-needed"  # local servers (Ollama, vLLM...) accept any key
PATH = "/chat/completions"


class OpenAIProvider(SdkProvider):
    sdk = "openai"
    client_class = "AsyncOpenAI"
    fallback_key = LOCAL_KEY

    def body(self, request: Request) -> dict[str, Any]:
        return chat_body(request)

    async def complete(self, request: Request) -> Completion:
        t0 = time.perf_counter()
        content, rate = await self._post_json(PATH, self.body(request))
        done = _completion(self.name, content, request.model, t0)
        done.rate = rate
        return done

    async def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        from openai import AsyncStream
        from openai.types.chat import ChatCompletion, ChatCompletionChunk

        client = self._get()
        t0 = time.perf_counter()
        body = {**self.body(request), "stream": True, "stream_options": {"include_usage": True}}
        parts: list[str] = []
        finish: str | None = None
        usage: Any = None
        model = request.model
        try:
            stream = await client.post(
                PATH,
                body=body,
                cast_to=ChatCompletion,
                stream=True,
                stream_cls=AsyncStream[ChatCompletionChunk],
            )
            rate = rate_headers(stream.response.headers)
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
            rate=rate,
        )


def _completion(provider: str, content: bytes, model: str, t0: float) -> Completion:
    """A Chat Completions answer (JSON bytes) as a `Completion`. A 2xx body that is not one
    is a server fault (transient): its error message if it carries one."""
    try:
        data = json.loads(content)
        choices = data.get("choices")
        if not choices:
            error = data.get("error")
            if error:
                message = error.get("message") if isinstance(error, dict) else error
                raise ServerError(f"{provider}: {str(message)[:MAX_MESSAGE]}")
        choice = choices[0] if choices else {}
        usage = data.get("usage") or {}
        return Completion(
            text=(choice.get("message") or {}).get("content") or "",
            finish_reason=_finish(choice.get("finish_reason")),
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            model=data.get("model") or model,
            latency_s=time.perf_counter() - t0,
        )
    except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        what = f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE]
        raise ServerError(f"{provider}: the answer is not a chat completion ({what})") from None


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
