"""How failures of the HTTP client below the SDKs become the engine's error classes: only a
connection that was never opened "never reached the provider" (it costs no attempt)."""

from __future__ import annotations

import httpx2
import pytest

from fanout.errors import ConnectionFailed, ConnectionLost, ProviderTimeout
from fanout.providers.sdk import transport_error

URL = "http://127.0.0.1:9/v1"


class ClientConnectorError(Exception):  # named as aiohttp names them
    pass


class ServerDisconnectedError(Exception):
    pass


class ClientOSError(Exception):
    pass


def wrapped(outer: Exception, cause: Exception | None) -> Exception:
    outer.__cause__ = cause
    return outer


def test_a_refused_connection_never_reached_the_provider_and_says_so() -> None:
    exc = wrapped(httpx2.ConnectTimeout("Cannot connect"), ClientConnectorError("refused"))
    mapped = transport_error(exc, "openai", URL)
    assert isinstance(mapped, ConnectionFailed)
    assert "cannot connect to 127.0.0.1:9: is the server running?" in str(mapped)
    assert isinstance(transport_error(httpx2.ConnectError("x"), "openai", URL), ConnectionFailed)


@pytest.mark.parametrize("cause", [ServerDisconnectedError("gone"), ClientOSError("reset")])
def test_a_connection_that_broke_after_it_opened_is_lost_not_unreached(cause: Exception) -> None:
    """The aiohttp transport reports these as connect timeouts too; the cause decides."""
    mapped = transport_error(wrapped(httpx2.ConnectTimeout("x"), cause), "openai", URL)
    assert isinstance(mapped, ConnectionLost)
    assert type(cause).__name__ in str(mapped)


def test_other_transport_failures_are_retryable_and_others_pass_through() -> None:
    assert isinstance(transport_error(httpx2.ReadTimeout("slow"), "p", URL), ProviderTimeout)
    assert isinstance(transport_error(httpx2.ReadError("cut"), "p", URL), ConnectionLost)
    assert isinstance(transport_error(httpx2.ProxyError("proxy"), "p", URL), ConnectionLost)
    bug = KeyError("not a transport failure")
    assert transport_error(bug, "p", URL) is bug
