"""The result cache, as the engine sees it: cache keys, and the gate a task passes before it
may be sent.

A task's cache key is the sha256 of (provider name and type, base URL, blueprint version,
sample index, sha256 of the request body the provider would send for the task's first
attempt). The body is `Provider.body(request)` hashed the way the sim-server hashes what it
receives (canonical JSON), so a stored `request_hash` matches the sim-server's `/stats`.

With the cache on, a task about to become ready goes through the gate instead: the first
task with a key leads, and looks its key up in the store (lookups are batched: one store
read per loop turn, not one per task); a hit finishes it with the stored answer, a miss
sends it. Tasks with the same key that arrive while a leader is out follow it: when its
result is durable they get a copy (or, if it failed, the next one leads). So identical
requests with the same sample index are sent once; different sample indexes (voting) are
different keys.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from fanout.providers.base import Provider, Request
from fanout.store.base import StoredResult
from fanout.tasks import Result, Task, TaskState

_CANON: Callable[[Any], str] = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False
).encode
DONE = TaskState.DONE


_heads: dict[tuple[Any, ...], bytes] = {}  # the key's head, by its parts: built once


def request_keys(provider: Provider, request: Request, t: Task) -> tuple[bytes, bytes]:
    """(cache key, request hash) of `request` as `provider` would send it for task `t`."""
    body = provider.body(request)
    body_hash = hashlib.sha256(_CANON(body).encode("utf-8", "surrogatepass")).digest()
    meta = t.meta
    version = meta.get("blueprint_version") if meta else None
    hk = (provider.name, type(provider), getattr(provider, "base_url", None), version, t.sample)
    head = _heads.get(hk)
    if head is None:
        text = _CANON([hk[0], hk[1].__name__, hk[2], version, t.sample])
        head = text.encode("utf-8", "surrogatepass")
        if len(_heads) > 4096:
            _heads.clear()
        _heads[hk] = head
    return hashlib.sha256(head + body_hash).digest(), body_hash


def cached_result(t: Task, hit: StoredResult | Result) -> Result:
    """A done result for `t` from a cached answer (or a leader's): no attempt, no latency."""
    return Result(
        t,
        DONE,
        text=hit.text,
        data=hit.data,
        finish_reason=hit.finish_reason,
        model=hit.model,
        input_tokens=hit.input_tokens,
        output_tokens=hit.output_tokens,
        attempts=0,
        latency_s=0.0,
    )


Lookup = Callable[[Sequence[bytes], float], Awaitable[Mapping[bytes, StoredResult]]]


class CacheGate:
    """Where a task waits, when the cache is on, between "its dependencies are done" and
    "queued to be sent". One per engine, shared by its runs.

    The gate knows neither the engine nor the store: it is given `lookup` (read cached
    answers), `hit` (finish a task with an answer not sent), `send` (queue a task to be
    sent) and `settled` (whether a task already has a result, e.g. it was cancelled)."""

    def __init__(
        self,
        *,
        ttl_s: float | None,
        lookup: Lookup,
        hit: Callable[[Task, Result], None],
        send: Callable[[Task], None],
        settled: Callable[[Task], bool],
        interrupting: Callable[[Task], bool],
    ) -> None:
        self.ttl_s = ttl_s
        self._lookup = lookup
        self._hit = hit
        self._send = send
        self._settled = settled
        self._interrupting = interrupting
        self._leaders: dict[bytes, Task] = {}
        self._led: dict[Task, bytes] = {}
        self._followers: dict[bytes, list[Task]] = {}
        self._pending: list[tuple[Task, bytes]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.lookups = 0
        self.hits = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fanout-cache")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def leading(self) -> bool:
        """Whether any task is out as the leader of its key."""
        return bool(self._led)

    def leads(self, t: Task) -> bool:
        return t in self._led

    def admit(self, t: Task, key: bytes) -> None:
        """`t` is ready to be sent, and its request's key is `key`."""
        if key in self._leaders:
            self._followers.setdefault(key, []).append(t)
            return
        self._leaders[key] = t
        self._led[t] = key
        self._pending.append((t, key))
        if not self._wake.is_set():
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            newer = time.time() - self.ttl_s if self.ttl_s is not None else 0.0
            try:
                hits = await self._lookup([k for _, k in batch], newer)
            except Exception:  # a cache that cannot be read is a cache miss
                hits = {}
            self.lookups += len(batch)
            for t, key in batch:
                if self._settled(t):  # cancelled meanwhile
                    continue
                hit = hits.get(key)
                if hit is not None:
                    self.hits += 1
                    self._hit(t, cached_result(t, hit))
                else:
                    self._send(t)

    def on_durable(self, t: Task, result: Result) -> None:
        """Leader `t`'s result is durable: its followers take a copy, or one leads next."""
        key = self._led.pop(t, None)
        if key is None:
            return
        del self._leaders[key]
        waiting = [
            f
            for f in self._followers.pop(key, ())
            if not self._settled(f) and not self._interrupting(f)
        ]
        if not waiting:
            return
        if result.state is DONE:
            for f in waiting:
                self._hit(f, cached_result(f, result))
            return
        self._promote(key, waiting)

    def abandon(self, t: Task) -> None:
        """Leader `t` will not finish here (its run was interrupted): another leads."""
        key = self._led.pop(t, None)
        if key is None:
            return
        del self._leaders[key]
        waiting = [f for f in self._followers.pop(key, ()) if not self._settled(f)]
        if waiting:
            self._promote(key, waiting)

    def _promote(self, key: bytes, waiting: list[Task]) -> None:
        for i, f in enumerate(waiting):
            if not self._interrupting(f):
                self._leaders[key] = f
                self._led[f] = key
                rest = waiting[:i] + waiting[i + 1 :]
                if rest:
                    self._followers[key] = rest
                self._send(f)
                return
        # every follower's run is being interrupted: they stay waiting, unled
