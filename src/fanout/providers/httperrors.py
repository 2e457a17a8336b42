"""Turning the official SDKs' exceptions into the engine's error classes."""

from __future__ import annotations

from collections.abc import Mapping

from fanout.errors import (
    ConnectionFailed,
    ProviderError,
    ProviderTimeout,
    error_for_status,
)

MAX_MESSAGE = 300


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
