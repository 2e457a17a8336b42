"""What the `openai` and `anthropic` adapters share: a pooled aiohttp transport, the
SDK client's life cycle, and turning the SDKs' exceptions into the engine's classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fanout.errors import (
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
    error_for_status,
)

MAX_MESSAGE = 300
DEFAULT_POOL = 64
KEEPALIVE_S = 60.0
SDK_TIMEOUT_S = 3600.0  # the engine enforces attempt and idle timeouts itself


class SdkProvider:
    """Base of the SDK adapters. The client is made on first use, inside the event loop,
    on the SDK's aiohttp transport with a keep-alive pool sized to the concurrency (the
    default transport costs several times the CPU per call under fan-out), retries off."""

    streams = True
    sdk = ""  # the SDK's module name

    def __init__(
        self,
        *,
        name: str,
        api_key: str | None,
        base_url: str | None = None,
        pool: int = DEFAULT_POOL,
    ) -> None:
        self.name = name
        self.base_url = base_url
        self._api_key = api_key
        self._pool = max(1, pool)
        self._client: Any = None

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    def limiter_key(self, model: str) -> str:
        return f"{self.name}:{model}"

    def _get(self) -> Any:
        if self._client is None:
            import importlib

            import httpx2

            module: Any = importlib.import_module(self.sdk)
            http = module.DefaultAioHttpClient(
                limits=httpx2.Limits(
                    max_connections=self._pool,
                    max_keepalive_connections=self._pool,
                    keepalive_expiry=KEEPALIVE_S,
                ),
                timeout=SDK_TIMEOUT_S,
            )
            self._client = self._make_client(module, http)
        return self._client

    def _make_client(self, module: Any, http: Any) -> Any:
        raise NotImplementedError

    def _mapped(self, exc: Exception) -> Exception:
        """Our error for an SDK error; anything else unchanged."""
        import importlib

        base = "OpenAIError" if self.sdk == "openai" else "AnthropicError"
        if isinstance(exc, getattr(importlib.import_module(self.sdk), base)):
            return from_sdk_error(exc, self.name)
        return exc

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def retry_after_s(headers: Mapping[str, str] | None) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (a number; HTTP dates are ignored)."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    s = headers.get("retry-after")
    if s:
        try:
            return max(0.0, float(s))
        except ValueError:
            return None
    return None


def from_sdk_error(exc: Exception, provider: str) -> ProviderError:
    """Map an `openai` or `anthropic` SDK exception (they share a shape) to ours.

    Messages are cut short: the SDKs quote the provider's error text, never our key."""
    name = type(exc).__name__
    message = f"{provider}: {str(exc)[:MAX_MESSAGE]}"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        return error_for_status(status, message, retry_after=retry_after_s(headers))
    if "Timeout" in name:
        return ProviderTimeout(message)
    if "Connection" in name:
        return ConnectionFailed(message)
    return ConnectionFailed(message) if "APIError" in name else ProviderError(message)
