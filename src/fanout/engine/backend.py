"""`Backend`: where an attempt's provider call is executed — the engine's one seam for it.

Everything else about an attempt stays in the engine, in this process: which task goes
next, its lane, the RPM/TPM budgets, retries, deadlines, the ledger and the store. A
backend only turns (provider, request) into a `Completion` or a provider error, the same
way wherever the call runs, so the limiter and the timeline see the same things.

`LocalBackend` calls the provider in this process (the default). `fanout.backends.ray`
sends the call to a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from fanout.providers.base import Completion, Provider, Request


@runtime_checkable
class Backend(Protocol):
    """Executes provider calls. `start` is awaited once, before the first call, with the
    engine's providers and its global concurrency; a `ConfigError` from it (say, a cluster
    that cannot be reached) stops the engine from starting. `complete` is cancelled (an
    asyncio cancel) when the attempt times out or is cancelled: it must stop the call."""

    name: str

    async def start(self, providers: Mapping[str, Provider], concurrency: int) -> None: ...

    def streams(self, provider: Provider) -> bool:
        """Whether calls of `provider` come back as a stream (for the idle timeout)."""
        ...

    async def complete(self, name: str, provider: Provider, request: Request) -> Completion: ...

    async def aclose(self) -> None: ...


class LocalBackend:
    """The provider called in this process, on the engine's event loop."""

    name = "local"

    async def start(self, providers: Mapping[str, Provider], concurrency: int) -> None:
        return None

    def streams(self, provider: Provider) -> bool:
        return provider.streams

    async def complete(self, name: str, provider: Provider, request: Request) -> Completion:
        return await provider.complete(request)

    async def aclose(self) -> None:
        return None
