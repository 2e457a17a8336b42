"""`fanout sim-server`: the simulator behind real HTTP (spec C4, issue 3 §2).

An aiohttp server on loopback speaking the OpenAI Chat Completions (`POST /v1/chat/completions`)
and Anthropic Messages (`POST /v1/messages`) wire formats, streaming included, with
`GET /v1/models`. Answers, usage, latency and injected faults come from the in-process
simulator (`SimProvider`): each wire body becomes a `Request`. Every API key (bearer token or
`x-api-key`; "anonymous" without one) gets its own simulator, so RPM/TPM are enforced per key
in the shape `--limit-shape` names (GCRA with bursts of one second of budget, a fixed window,
a token bucket with a large burst, a sliding window: `providers/sim_limits.py`) and answered
with real 429s and `retry-after` / `retry-after-ms`. Every answer carries the rate headers
the real services send: `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` on the
OpenAI route, `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` on the
Anthropic one (`--no-rate-headers` leaves them out, as many local servers do). The n-th arrival of
the same body is its attempt n, so a client's retry draws its fault anew.

`GET /stats` counts requests, completions by the sha256 of each body's canonical JSON, and 429s
sent (enforced and injected); `--stats-file` keeps them across restarts. Keys and bodies are
never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import errno
import hashlib
import itertools
import json
import logging
import math
import os
import secrets
import signal
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from pathlib import Path
from typing import Any, Literal, cast

from aiohttp import web

from fanout.errors import ProviderError
from fanout.providers.base import Chunk, Completion, Request, estimate_tokens
from fanout.providers.sim import SimConfig, SimProvider, parse_faults, parse_latency
from fanout.providers.sim_limits import DEFAULT_SHAPE, DEFAULT_WINDOW_S, SHAPES
from fanout.sim_wire import (
    AnthropicSse,
    BadRequest,
    OpenAISse,
    anthropic_message,
    anthropic_request,
    model_info,
    openai_completion,
    openai_request,
)

__all__ = ["DEFAULT_PORT", "SimServer", "main", "request_hash", "serve", "start_server"]

log = logging.getLogger(__name__)
Api = Literal["openai", "anthropic"]
DEFAULT_PORT = 8089
#: how soon after a change the stats file is rewritten
STATS_FLUSH_S = 0.05
MODELS: tuple[str, ...] = ("sim-1",)
_CANON: Callable[[Any], str] = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False
).encode
_DUMP: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_ERROR_TYPES: dict[Api, dict[int, str]] = {
    "openai": {429: "rate_limit_error", 500: "server_error", 504: "timeout", 529: "overloaded"},
    "anthropic": {400: "invalid_request_error", 404: "not_found_error", 429: "rate_limit_error"}
    | {500: "api_error", 504: "timeout_error", 529: "overloaded_error"},
}


def request_hash(body: Any) -> str:
    """sha256 hex of `json.dumps(body, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`: the key of `/stats`' `by_request_hash`."""
    return hashlib.sha256(_CANON(body).encode("utf-8", "surrogatepass")).hexdigest()


def _seconds(value: float) -> str:
    """`retry-after` value: decimal seconds (both SDKs parse floats), at most ms precision."""
    return f"{math.ceil(value * 1000) / 1000:.3f}".rstrip("0").rstrip(".")


def _duration(seconds: float) -> str:
    """OpenAI's `x-ratelimit-reset-*` style: `"0s"`, `"120ms"`, `"1.5s"`, `"6m0s"`."""
    if seconds < 1.0:
        return f"{math.ceil(seconds * 1000)}ms" if seconds > 0 else "0s"
    minutes, rest = divmod(seconds, 60.0)
    text = f"{rest:.3f}".rstrip("0").rstrip(".") + "s"
    return f"{int(minutes)}m{text}" if minutes else text


def _error(
    api: Api, status: int, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    kind = _ERROR_TYPES[api].get(status, "invalid_request_error" if status < 500 else "api_error")
    payload: dict[str, Any] = {"type": "error", "error": {"type": kind, "message": message}}
    if api == "openai":
        code = "rate_limit_exceeded" if status == 429 else None
        payload = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return web.Response(
        status=status, text=_DUMP(payload), content_type="application/json", headers=headers
    )


class _Stats:
    """The `/stats` counters, optionally kept in a JSON file (rewritten atomically)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.requests = self.completed = self.rejected = 0
        self.by_hash: dict[str, int] = {}
        self._flush: asyncio.TimerHandle | None = None
        if path is not None and path.exists():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
                self.requests = int(data["requests_total"])
                self.completed = int(data["completed_total"])
                self.rejected = int(data["rejected_429"])
                self.by_hash = {str(k): int(v) for k, v in data["by_request_hash"].items()}
            except (ValueError, TypeError, KeyError, AttributeError) as e:
                raise ValueError(f"stats file {path} is not a sim-server stats file: {e}") from e

    def snapshot(self) -> dict[str, Any]:
        counts = {"requests_total": self.requests, "completed_total": self.completed}
        return {**counts, "rejected_429": self.rejected, "by_request_hash": dict(self.by_hash)}

    def changed(self) -> None:
        if self.path is not None and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(STATS_FLUSH_S, self.save)

    def save(self) -> None:
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self.path is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(_DUMP(self.snapshot()), encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("sim-server: could not write the stats file %s: %s", self.path, e)

    def reset(self) -> None:
        self.requests = self.completed = self.rejected = 0
        self.by_hash = {}
        self.changed()  # the reset is persisted too


class SimServer:
    """A running sim-server; `await start_server(...)` makes one. Stop it with `stop()` (or
    use it as an async context manager)."""

    def __init__(
        self,
        config: SimConfig,
        host: str,
        stats_file: Path | None = None,
        *,
        rate_headers: bool = True,
    ) -> None:
        self.config = config  # its rpm / tpm apply per API key
        self.rate_headers = rate_headers
        self.host = host
        self.port = 0
        self._sims: dict[str, SimProvider] = {}
        self._attempts: dict[str, int] = {}
        #: requests being handled now: 0 once every answer is counted (a client killed
        #: mid-call leaves its calls running here until they end)
        self._in_flight = 0
        self._stats = _Stats(stats_file)
        self._ids = itertools.count(1)
        self._boot = secrets.token_hex(4)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self, port: int = 0) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        routes = app.router
        routes.add_post("/v1/chat/completions", self._serve)
        routes.add_post("/v1/messages", self._serve)
        routes.add_get("/v1/models", self._models)
        routes.add_get("/v1/models/{model}", self._model)
        routes.add_get("/stats", self._stats_handler)
        routes.add_post("/stats/reset", self._stats_handler)
        routes.add_route("*", "/{tail:.*}", self._not_found)
        runner = web.AppRunner(
            app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, port, backlog=1024)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        """Stop serving (in-flight calls get a second to finish) and write the stats file."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self._stats.save()

    async def __aenter__(self) -> SimServer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, Any]:
        """What `GET /stats` answers, plus `faults`: injected faults by kind, and `in_flight`:
        requests being handled now."""
        faults: dict[str, int] = {}
        for sim in self._sims.values():
            for kind, n in sim.stats()["faults"].items():
                faults[kind] = faults.get(kind, 0) + n
        return {**self._stats.snapshot(), "faults": faults, "in_flight": self._in_flight}

    def reset_stats(self) -> None:
        self._stats.reset()
        self._attempts.clear()
        for sim in self._sims.values():
            sim.reset_stats()

    # -- handlers ----------------------------------------------------------------------

    async def _models(self, request: web.Request) -> web.Response:
        data = [model_info(m) for m in MODELS]
        payload = {"object": "list", "data": data, "has_more": False}
        return web.json_response({**payload, "first_id": MODELS[0], "last_id": MODELS[-1]})

    async def _model(self, request: web.Request) -> web.Response:
        return web.json_response(model_info(request.match_info["model"]))

    async def _stats_handler(self, request: web.Request) -> web.Response:
        if request.method == "POST":
            self.reset_stats()
        return web.json_response(self.stats())

    async def _not_found(self, request: web.Request) -> web.Response:
        api: Api = "anthropic" if request.path.startswith("/v1/messages") else "openai"
        return _error(api, 404, f"no route for {request.method} {request.path}")

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        self._in_flight += 1
        try:
            return await self._serve_one(request)
        finally:
            self._in_flight -= 1

    async def _serve_one(self, request: web.Request) -> web.StreamResponse:
        api: Api = "anthropic" if request.path == "/v1/messages" else "openai"
        stats = self._stats
        stats.requests += 1
        stats.changed()
        tool: str | None = None
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict):
                raise BadRequest("the body must be a JSON object")
            if api == "openai":
                req = openai_request(body)
            else:
                req, tool = anthropic_request(body)
        except (BadRequest, ValueError, TypeError, AttributeError) as e:  # malformed shapes
            return _error(api, 400, f"invalid request: {e}")
        digest = request_hash(body)
        req.attempt = self._attempts[digest] = self._attempts.get(digest, 0) + 1
        sim = self._sim_for(request)
        cid = f"{'chatcmpl-' if api == 'openai' else 'msg_'}sim{self._boot}{next(self._ids):08x}"
        if body.get("stream") is True:
            enc: OpenAISse | AnthropicSse = AnthropicSse(cid, req.model, tool)
            if api == "openai":
                opts = body.get("stream_options")
                usage = isinstance(opts, dict) and opts.get("include_usage") is True
                enc = OpenAISse(cid, req.model, usage)
            return await self._stream(request, api, sim, req, enc, digest)
        try:
            done = await sim.complete(req)
        except ProviderError as e:
            return self._failed(api, sim, e)
        if api == "openai":
            payload = openai_completion(cid, done)
        else:
            payload = anthropic_message(cid, done, tool)
        self._completed(digest)
        return web.Response(
            text=_DUMP(payload), content_type="application/json", headers=self._headers(api, sim)
        )

    async def _stream(
        self,
        request: web.Request,
        api: Api,
        sim: SimProvider,
        req: Request,
        enc: OpenAISse | AnthropicSse,
        digest: str,
    ) -> web.StreamResponse:
        gen = cast(AsyncGenerator[Chunk | Completion, None], sim.stream(req))
        async with contextlib.aclosing(gen):
            try:
                item = await anext(gen)  # an error before the first chunk is a plain HTTP error
            except ProviderError as e:
                return self._failed(api, sim, e)
            resp = web.StreamResponse(headers={**_SSE_HEADERS, **self._headers(api, sim)})
            try:
                await resp.prepare(request)
                await resp.write(enc.head(estimate_tokens(req.prompt_text())))
                while isinstance(item, Chunk):
                    await resp.write(enc.delta(item.text))
                    item = await anext(gen)
                await resp.write(enc.tail(item))
            except ProviderError as e:  # a fault after the stream began (a timeout's end)
                with contextlib.suppress(ConnectionError):
                    await resp.write(enc.error(e))
                return resp
            except ConnectionError:  # the client went away
                return resp
        self._completed(digest)
        with contextlib.suppress(ConnectionError):
            await resp.write_eof()
        return resp

    # -- helpers -----------------------------------------------------------------------

    def _sim_for(self, request: web.Request) -> SimProvider:
        headers = request.headers
        key = headers.get("x-api-key") or ""
        if not key and (auth := headers.get("Authorization", "")):
            scheme, _, token = auth.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else ""
        key = key or "anonymous"
        if (sim := self._sims.get(key)) is None:
            sim = self._sims[key] = SimProvider(self.config)
        return sim

    def _headers(self, api: Api, sim: SimProvider) -> dict[str, str]:
        return _limit_headers(api, sim) if self.rate_headers else {}

    def _completed(self, digest: str) -> None:
        stats = self._stats
        stats.completed += 1
        stats.by_hash[digest] = stats.by_hash.get(digest, 0) + 1
        stats.changed()

    def _failed(self, api: Api, sim: SimProvider, err: ProviderError) -> web.Response:
        status = err.status or 504  # only the injected timeout has no status
        headers = self._headers(api, sim)
        if err.retry_after is not None:
            headers["retry-after"] = _seconds(err.retry_after)
            headers["retry-after-ms"] = str(math.ceil(err.retry_after * 1000))
        if status == 429:
            self._stats.rejected += 1
            self._stats.changed()
        return _error(api, status, err.message, headers)


def _limit_headers(api: Api, sim: SimProvider) -> dict[str, str]:
    """The rate headers of `api` for the budgets of `sim` (per minute, as the services
    state them)."""
    headers: dict[str, str] = {}
    for name, (rate, remaining, reset) in sim.rate_limits().items():
        if api == "openai":
            headers[f"x-ratelimit-limit-{name}"] = f"{rate:g}"
            headers[f"x-ratelimit-remaining-{name}"] = str(remaining)
            headers[f"x-ratelimit-reset-{name}"] = _duration(reset)
        else:  # Anthropic: the reset is an RFC 3339 time
            at = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=reset)
            headers[f"anthropic-ratelimit-{name}-limit"] = f"{rate:g}"
            headers[f"anthropic-ratelimit-{name}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{name}-reset"] = at.isoformat(timespec="milliseconds")
    return headers


async def start_server(
    config: SimConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    rpm: float | None = None,
    tpm: float | None = None,
    stats_file: str | os.PathLike[str] | None = None,
    rate_headers: bool = True,
) -> SimServer:
    """Start a sim-server in the running event loop (port 0: any free port; see `.url`).
    `rpm` / `tpm` are per API key and default to `config.rpm` / `config.tpm`;
    `rate_headers=False` leaves out the rate headers."""
    rpm = config.rpm if rpm is None else rpm
    tpm = config.tpm if tpm is None else tpm
    path = Path(stats_file) if stats_file is not None else None
    cfg = dataclasses.replace(config, rpm=rpm, tpm=tpm)
    server = SimServer(cfg, host, path, rate_headers=rate_headers)
    await server.start(port)
    return server


def serve(
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    config: SimConfig | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
    stats_file: str | os.PathLike[str] | None = None,
    rate_headers: bool = True,
) -> None:
    """Run a sim-server until SIGINT / SIGTERM; prints `sim-server listening on URL` first."""

    async def run() -> None:
        cfg = config or SimConfig()
        server = await start_server(
            cfg,
            host=host,
            port=port,
            rpm=rpm,
            tpm=tpm,
            stats_file=stats_file,
            rate_headers=rate_headers,
        )
        print(f"sim-server listening on {server.url}", flush=True)
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
        finally:
            await server.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m fanout.sim_server [--host H] [--port P] [--rpm N] [--tpm N] ...`."""
    p = argparse.ArgumentParser(
        prog="fanout sim-server",
        description="The LLM simulator as an OpenAI- and Anthropic-compatible HTTP server.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    p.add_argument("--rpm", type=float, help="requests per minute, per API key")
    p.add_argument("--tpm", type=float, help="tokens per minute, per API key")
    p.add_argument(
        "--limit-shape",
        choices=SHAPES,
        default=DEFAULT_SHAPE,
        help="how --rpm/--tpm are enforced: gcra (bursts of one second), fixed (a window), "
        "bucket (a token bucket of a whole window), sliding (a sliding window)",
    )
    p.add_argument(
        "--limit-window",
        type=float,
        default=DEFAULT_WINDOW_S,
        help="seconds of the fixed/bucket/sliding window (default: 60)",
    )
    p.add_argument(
        "--no-rate-headers",
        action="store_true",
        help="send no x-ratelimit-* / anthropic-ratelimit-* headers",
    )
    p.add_argument("--faults", default="", help="fault rates, e.g. 429=0.05,500=0.02,timeout=1%%")
    p.add_argument("--latency", help="e.g. 50ms or base=50ms,per_token=1ms,jitter=0.2")
    p.add_argument("--seed", type=int, default=0, help="seed of answers and fault draws")
    p.add_argument("--stats-file", help="keep /stats counts in this JSON file across restarts")
    args = p.parse_args(argv)
    try:
        latency = parse_latency(args.latency) if args.latency else {}
        faults = parse_faults(args.faults)
        config = SimConfig(
            seed=args.seed,
            faults=faults,
            rpm=args.rpm,
            tpm=args.tpm,
            limit_shape=args.limit_shape,
            limit_window_s=args.limit_window,
            **latency,
        )
    except ValueError as e:
        p.error(str(e))
    try:
        serve(
            args.host,
            args.port,
            config,
            None,
            None,
            args.stats_file,
            rate_headers=not args.no_rate_headers,
        )
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            print(
                f"sim-server: port {args.port} on {args.host} is in use; stop what holds it "
                "or give another --port (0 picks a free one)",
                file=sys.stderr,
            )
            return 2
        print(f"sim-server: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"sim-server: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
