"""The provider protocol: one request in, one completion (or a typed error) out.

A provider never retries (the engine is the one retry loop), never writes files, and never
sees a key it did not get from the environment or the config's key reference.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, Any]


@dataclass(slots=True)
class Request:
    """What the engine asks a provider for. `extra` is passed through into the body."""

    model: str
    messages: list[Message]
    max_tokens: int = 1024
    temperature: float | None = None
    json_schema: dict[str, Any] | None = None  # ask for JSON (schema optional)
    json_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    attempt: int = 1  # 1-based; the simulator keys its fault draws on it

    def prompt_text(self) -> str:
        """All message text joined: what token estimates and the simulator read."""
        parts: list[str] = []
        for m in self.messages:
            c = m.get("content")
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts.extend(str(p.get("text", "")) for p in c if isinstance(p, dict))
        return "\n".join(parts)


@dataclass(slots=True)
class Completion:
    text: str
    finish_reason: str = "stop"  # stop | length | ...
    input_tokens: int = 0
    output_tokens: int = 0
    model: str = ""
    latency_s: float = 0.0
    #: what the provider's rate headers said (`providers.sdk.rate_headers`), if it sent any
    rate: dict[str, float] | None = None


@dataclass(slots=True)
class Chunk:
    """A piece of a streamed answer."""

    text: str


@runtime_checkable
class Provider(Protocol):
    """Everything the engine needs from a provider.

    `limiter_key(model)` names the budget calls share (provider + model + key);
    `body` is the canonical request body actually sent (for cache keys and request stats);
    `complete` makes the call; providers with `streams = True` also offer `stream`, which
    yields `Chunk`s and finally one `Completion`, so the engine can apply an idle timeout.
    """

    name: str
    streams: bool

    def limiter_key(self, model: str) -> str: ...

    def body(self, request: Request) -> dict[str, Any]: ...

    async def complete(self, request: Request) -> Completion: ...

    def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]: ...

    async def aclose(self) -> None: ...


class CallableProvider:
    """A provider around a Python function `(Request) -> str | Completion`, sync or async.

    Sync functions run in a thread so they never block the event loop. `cpu=True` says the
    function burns CPU rather than waiting: a backend with processes to spare (Ray) runs
    the calls in worker processes holding one CPU each, so calls use many cores at once.
    """

    streams = False

    def __init__(
        self,
        fn: Callable[[Request], Any],
        *,
        name: str = "python",
        threaded: bool | None = None,
        cpu: bool = False,
        ref: str | None = None,
    ) -> None:
        import inspect

        self.name = name
        self.cpu = cpu
        #: "package.module:function" when built from fanout.yaml (workers import it by name)
        self.ref = ref
        self._fn = fn
        # an object with an async __call__ is async too
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004
        )
        self._threaded = (not self._is_async) if threaded is None else threaded

    @property
    def fn(self) -> Callable[[Request], Any]:
        return self._fn

    def limiter_key(self, model: str) -> str:
        return f"{self.name}:{model}"

    def body(self, request: Request) -> dict[str, Any]:
        return {"model": request.model, "messages": request.messages}

    async def complete(self, request: Request) -> Completion:
        import asyncio

        t0 = time.perf_counter()
        if self._is_async:
            out = await self._fn(request)
        elif self._threaded:
            out = await asyncio.to_thread(self._fn, request)
        else:
            out = self._fn(request)
        return _completion(out, request, t0)

    def complete_here(self, request: Request) -> Completion:
        """The call in this thread, with no event loop of the caller's (an async function
        gets a loop of its own): what a worker thread dedicated to CPU calls runs."""
        import asyncio

        t0 = time.perf_counter()
        out = asyncio.run(self._fn(request)) if self._is_async else self._fn(request)
        return _completion(out, request, t0)

    def stream(self, request: Request) -> AsyncIterator[Chunk | Completion]:
        raise NotImplementedError("CallableProvider does not stream")

    async def aclose(self) -> None:
        return None


def _completion(out: Any, request: Request, t0: float) -> Completion:
    if isinstance(out, Completion):
        return out
    return Completion(text=str(out), model=request.model, latency_s=time.perf_counter() - t0)


def chat_body(request: Request) -> dict[str, Any]:
    """The OpenAI Chat Completions body for `request`: what the openai adapter sends, and
    the simulator's canonical form (its request hash and fault draws are keyed on it)."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
    }
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.json_schema:
        body["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": request.json_schema, "strict": False},
        }
    elif request.json_schema is not None or request.json_mode:
        body["response_format"] = {"type": "json_object"}
    for k, v in request.extra.items():
        body.setdefault(k, v)
    return body


def estimate_tokens(text: str) -> int:
    """Local token estimate: a CJK character is about one token, other text about four
    characters a token. No tokenizer files are needed."""
    n = len(text)
    if n == 0:
        return 0
    if text.isascii():
        return n // 4 + 1
    cjk = 0
    for ch in text:
        if ch >= "\u2e80":
            cjk += 1
    return cjk + (n - cjk) // 4 + 1
