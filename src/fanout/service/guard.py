"""Who may talk to the service: one ASGI middleware in front of every path.

- **Token.** Every path, the SSE stream and the static page included, needs the server's
  token: `Authorization: Bearer T`, or the `fanout_token` cookie. A request carrying
  `?token=T` (the URL the server prints, like Jupyter's) gets that cookie, HttpOnly and
  SameSite=Strict, so the page's own requests and its EventSource carry it and no other
  site's do. `GET /healthz` alone answers `{"ok": true}` without it, and nothing else.
- **Host.** The Host header must name this server (loopback names, the `--host` given,
  any `--allow-host`): a page on another site whose name was rebound to 127.0.0.1 (DNS
  rebinding) is refused before the token is even looked at.
- **No CORS**: no Access-Control header is ever sent, and a request whose `Origin` is
  another site is refused, so a page elsewhere can neither read nor post here.
- **Uploads** are refused past `max_body` bytes, by their Content-Length or, without one,
  as they arrive.

Tokens are compared in constant time and never written to a log or a response.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE = "fanout_token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


class BodyTooLarge(Exception):
    pass


def host_names(host: str, extra: Iterable[str] = ()) -> frozenset[str]:
    """The names a Host header may give: loopback ones, the bound address (unless it is a
    wildcard: then only those named with --allow-host, and the loopback ones)."""
    names = set(LOOPBACK_NAMES)
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.strip("[]").lower())
    names.update(h.strip("[]").lower() for h in extra)
    return frozenset(names)


def _hostname(value: str) -> str:
    """The name part of a Host header ("[::1]:8642" -> "::1", "a.b:80" -> "a.b")."""
    try:
        return (urlsplit("//" + value).hostname or "").lower()
    except ValueError:
        return ""


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str,
        hosts: frozenset[str],
        max_body: int,
    ) -> None:
        self.app = app
        self._token = token.encode()
        self.hosts = hosts
        self.max_body = max_body

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self._token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        host = _hostname(headers.get("host", ""))
        if host not in self.hosts:
            await _refuse(send, 421, "this server does not answer to that Host name")
            return
        origin = headers.get("origin")
        # the whole host:port: a page of another server on this machine is another site
        # for us, though a browser calls it the same site (SameSite ignores ports)
        if origin is not None and urlsplit(origin).netloc.lower() != headers["host"].lower():
            await _refuse(send, 403, "cross-origin requests are refused")
            return
        path = scope["path"]
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        url_token = (query.get("token") or [None])[0]
        bearer = headers.get("authorization", "")
        given = bearer[7:].strip() if bearer[:7].lower() == "bearer " else None
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except Exception:  # a malformed Cookie header is no token
            cookie = SimpleCookie()
        from_cookie = cookie[COOKIE].value if COOKIE in cookie else None
        set_cookie = self._ok(url_token)
        if not (set_cookie or self._ok(given) or self._ok(from_cookie)):
            if path == "/healthz" and scope["method"] == "GET":
                await _json(send, 200, {"ok": True})
                return
            await _refuse(
                send,
                401,
                "missing or wrong token: send 'Authorization: Bearer TOKEN' or open the URL "
                "the server printed",
            )
            return
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            await _refuse(send, 413, f"the request body is over {self.max_body:,} bytes")
            return

        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return msg

        started = False

        async def send_with_cookie(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
                if set_cookie:
                    value = (f"{COOKIE}={url_token}; HttpOnly; SameSite=Strict; Path=/").encode(
                        "latin-1"
                    )
                    msg["headers"] = [*msg.get("headers", []), (b"set-cookie", value)]
            await send(msg)

        try:
            await self.app(scope, limited_receive, send_with_cookie)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"the request body is over {self.max_body:,} bytes")


async def _json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


async def _refuse(send: Send, status: int, why: str) -> None:
    await _json(send, status, {"detail": why})
