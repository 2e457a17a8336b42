"""What the `openai` and `anthropic` adapters share: a pooled aiohttp transport, the
SDK client's life cycle, a direct JSON POST on that client's transport, and turning the SDKs'
exceptions into the engine's classes."""

from __future__ import annotations

import datetime
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from fanout.errors import (
    ConnectionFailed,
    ConnectionLost,
    ProviderError,
    ProviderTimeout,
    error_for_status,
)

MAX_MESSAGE = 300
DEFAULT_POOL = 64
KEEPALIVE_S = 60.0
SDK_TIMEOUT_S = 3600.0  # the engine enforces attempt and idle timeouts itself
_DUMPS: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def _import_quietly(name: str) -> None:
    """Import `name` ahead of need; a failure is left for the first call to report."""
    import contextlib
    import importlib

    with contextlib.suppress(Exception):
        importlib.import_module("httpx2")
        importlib.import_module(name)
        tls_context()


@functools.cache
def tls_context() -> Any:
    """The TLS context every SDK client of this process shares, built as each would build
    its own (`httpx2.create_ssl_context()`: the CA bundle, SSL_CERT_FILE and SSL_CERT_DIR).
    Building one reads and parses the whole CA bundle (0.37 s measured on a busy 2-core
    machine), which each new provider used to do again before its first call."""
    import httpx2

    return httpx2.create_ssl_context()


class SdkProvider:
    """Base of the SDK adapters. The client is made on first use, inside the event loop,
    on the SDK's aiohttp transport with a keep-alive pool sized to the concurrency (the
    default transport costs several times the CPU per call under fan-out), retries off."""

    streams = True
    sdk = ""  # the SDK's module name, which is also the default provider name
    client_class = ""  # its async client, e.g. "AsyncOpenAI"
    fallback_key: str | None = None  # sent when no key is given (local servers)

    def __init__(
        self,
        *,
        name: str | None = None,
        api_key: str | None,
        base_url: str | None = None,
        pool: int = DEFAULT_POOL,
    ) -> None:
        self.name = name or self.sdk
        self.base_url = base_url
        self._api_key = api_key or self.fallback_key
        self._pool = max(1, pool)
        self._client: Any = None
        self._http: Any = None  # the SDK client's httpx2 client (its aiohttp transport)
        self._urls: dict[str, Any] = {}  # endpoint path -> httpx2.URL, for `_post_json`

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, base_url={self.base_url!r})"

    def limiter_key(self, model: str) -> str:
        return f"{self.name}:{model}"

    def preload(self) -> None:
        """Start importing the SDK (some 0.4 s) in a thread, so that the first call does not
        wait for it: a batch asks for this before it reads its input and opens its store."""
        import sys
        import threading

        if self.sdk in sys.modules:
            return
        threading.Thread(target=_import_quietly, args=(self.sdk,), daemon=True).start()

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
                verify=tls_context(),
            )
            self._client = self._make_client(module, http)
            self._http = http
        return self._client

    async def _post_json(
        self, path: str, body: Mapping[str, Any]
    ) -> tuple[bytes, dict[str, float] | None]:
        """POST `body` to the SDK client's base URL + `path` on the client's own HTTP client
        (its aiohttp transport), with the headers the SDK sends (auth included), and return
        the answer's bytes with what its rate headers say; failures raise our errors, mapped
        as `from_sdk_error` maps the SDK's. This skips the SDK's per-call request building
        (options, URL and header merging, body transformation), which under fan-out costs
        more CPU than the HTTP call itself. The headers become the HTTP client's defaults
        and each URL is parsed once, which spares httpx a third of its own work per call."""
        import httpx2

        client = self._get()
        url = self._urls.get(path)
        if url is None:
            headers = {**client.default_headers, **client.auth_headers}
            self._http.headers.update({k: v for k, v in headers.items() if isinstance(v, str)})
            url = self._urls[path] = httpx2.URL(str(client.base_url).rstrip("/") + path)
        try:
            resp = await self._http.post(url, content=_DUMPS(body).encode())
        except Exception as exc:
            mapped = transport_error(exc, self.name, str(client.base_url))
            if mapped is exc:
                raise
            raise mapped from exc
        status: int = resp.status_code
        if not 200 <= status < 300:
            message = f"{self.name}: Error code: {status} - {_error_text(resp.content)}"
            err = error_for_status(
                status, message[:MAX_MESSAGE], retry_after=retry_after_s(resp.headers)
            )
            err.rate = rate_headers(resp.headers)
            raise err
        content: bytes = resp.content
        return content, rate_headers(resp.headers)

    def _make_client(self, module: Any, http: Any) -> Any:
        client_class = getattr(module, self.client_class)
        return client_class(
            api_key=self._api_key,
            base_url=self.base_url,
            max_retries=0,
            timeout=SDK_TIMEOUT_S,
            http_client=http,
        )

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
            self._client = self._http = None
            self._urls = {}


def _error_text(content: bytes) -> str:
    """The provider's error message from an error body (either SDK's shape), else its text."""
    try:
        data = json.loads(content)
        error = data.get("error", data) if isinstance(data, dict) else data
        message = error.get("message") if isinstance(error, dict) else None
        return str(message) if message else str(data)
    except ValueError:
        return content.decode("utf-8", "replace").strip() or "(no body)"


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


_DURATION = re.compile(r"(\d+(?:\.\d*)?)(ms|h|m|s)")
_RATE_NAMES = ("requests", "tokens")


def rate_headers(headers: Mapping[str, str] | None) -> dict[str, float] | None:
    """What a provider's rate headers say, or None when it sent none: for `requests` and
    `tokens`, `{name}_limit` (per minute), `{name}_remaining` and `{name}_reset` (seconds
    from now until the budget is whole again). Reads OpenAI's `x-ratelimit-limit-requests`,
    `-remaining-`, `-reset-` (a duration such as `1s`, `6m0s`, `120ms`) and Anthropic's
    `anthropic-ratelimit-requests-limit`, `-remaining`, `-reset` (an RFC 3339 time).
    Values that do not parse are left out: a header is a hint, never a reason to fail."""
    if not headers:
        return None
    out: dict[str, float] = {}
    for name in _RATE_NAMES:
        for field in ("limit", "remaining", "reset"):
            raw = headers.get(f"x-ratelimit-{field}-{name}")
            value = None
            if raw is not None:
                value = _openai_duration(raw) if field == "reset" else _number(raw)
            else:
                raw = headers.get(f"anthropic-ratelimit-{name}-{field}")
                if raw is not None:
                    value = _rfc3339_from_now(raw) if field == "reset" else _number(raw)
            if value is not None:
                out[f"{name}_{field}"] = value
    return out or None


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 <= value < float("inf") else None


def _openai_duration(text: str) -> float | None:
    """`"6m0s"` -> 360.0, `"120ms"` -> 0.12, `"1.5s"` -> 1.5 (a bare number is seconds)."""
    text = text.strip()
    if (plain := _number(text)) is not None:
        return plain
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        return None
    scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    return sum(float(n) * scale[u] for n, u in parts)


def _rfc3339_from_now(text: str) -> float | None:
    try:
        at = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=datetime.UTC)
    return max(0.0, (at - datetime.datetime.now(datetime.UTC)).total_seconds())


def from_sdk_error(exc: Exception, provider: str) -> ProviderError:
    """Map an `openai` or `anthropic` SDK exception (they share a shape) to ours.

    Messages are cut short: the SDKs quote the provider's error text, never our key."""
    name = type(exc).__name__
    message = f"{provider}: {str(exc)[:MAX_MESSAGE]}"
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        err = error_for_status(status, message, retry_after=retry_after_s(headers))
        err.rate = rate_headers(headers)
        return err
    cause = exc.__cause__
    if isinstance(cause, Exception) and ("Timeout" in name or "Connection" in name):
        url = str(getattr(getattr(exc, "request", None), "url", "") or "")
        mapped = transport_error(cause, provider, url)
        if isinstance(mapped, ProviderError):
            return mapped
    if "Timeout" in name:
        return ProviderTimeout(message)
    if "Connection" in name:
        return ConnectionLost(message)
    return ConnectionLost(message) if "APIError" in name else ProviderError(message)


#: what aiohttp raises when it could not open a connection (the request never left)
_AIOHTTP_CONNECT = frozenset(
    {
        "ClientConnectorError",
        "ClientConnectorDNSError",
        "ClientConnectorCertificateError",
        "ClientProxyConnectionError",
        "ClientConnectorSSLError",
        "ConnectionTimeoutError",
    }
)


def transport_error(exc: Exception, provider: str, url: str) -> Exception:
    """Our error for an exception of the HTTP client below an SDK (httpx or its fork): a
    failure to connect never reached the provider (`ConnectionFailed`, named as such); a
    timeout after connecting is a timeout; a connection that broke after the request was
    sent, or any other transport failure, is `ConnectionLost`. Anything that is not a
    transport failure is returned unchanged.

    The aiohttp transport reports every broken connection as a connect timeout, so the
    aiohttp error it wraps decides: only a connection that was never opened counts as one
    that never reached the provider."""
    kind = type(exc).__name__
    text = f"{provider}: {kind}: {exc}"[:MAX_MESSAGE]
    if kind in ("ConnectError", "ConnectTimeout"):
        cause = exc.__cause__ or exc.__context__
        if cause is None or type(cause).__name__ in _AIOHTTP_CONNECT:
            return ConnectionFailed(
                f"{provider}: cannot connect to {_host(url)}: is the server running? ({exc})"[
                    :MAX_MESSAGE
                ]
            )
        return ConnectionLost(f"{provider}: {type(cause).__name__}: {cause}"[:MAX_MESSAGE])
    if kind.endswith("Timeout") or kind == "TimeoutException":
        return ProviderTimeout(text)
    if any(k.__name__ in ("TransportError", "HTTPError") for k in type(exc).__mro__):
        return ConnectionLost(text)
    return exc


def _host(url: str) -> str:
    """host:port of a URL, for a message."""
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0] or url
