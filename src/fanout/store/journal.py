"""The journal: groups the engine's transitions into batches for the store.

Workers append ops and move on; one flusher task writes whatever accumulated while the
previous write was in flight (group commit), then hands the batch's "tokens" (the tasks
whose results it held) to `on_durable`. Nothing is reported done before that.

A store may ask for bigger groups (`commit_interval_s`, `commit_group_ops`): after a write,
the flusher waits until `commit_interval_s` has passed since that write began, unless
`commit_group_ops` ops are already waiting. The SQLite store asks for 2 ms / 512 ops, so a
trickle of results costs one fsync per 2 ms, not one per result.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from fanout.store.base import Op, Store

T = TypeVar("T")

#: a batch is written at this size even if the loop has not yielded yet
MAX_BATCH_OPS = 4096
#: past this many ops waiting, workers wait for the store (`room()`): memory stays bounded
#: when results come faster than the disk takes them
HIGH_WATER_OPS = 65536


class Journal(Generic[T]):
    def __init__(
        self,
        store: Store,
        on_durable: Callable[[list[T]], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        self._store = store
        self._on_durable = on_durable
        self._on_error = on_error
        self._ops: list[Op] = []
        self._tokens: list[T] = []
        self._wake = asyncio.Event()
        self._appended = 0
        self._durable = 0
        self._flush_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._room: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._interval = float(getattr(store, "commit_interval_s", 0.0) or 0.0)
        self._group = int(getattr(store, "commit_group_ops", 0) or 0)
        self.batches = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="fanout-journal")

    def append(self, op: Op) -> None:
        self._ops.append(op)
        self._appended += 1
        if not self._wake.is_set():
            self._wake.set()

    def commit(self, op: Op, token: T) -> None:
        """Append `op`; `token` reaches `on_durable` once the batch holding it is durable."""
        self._ops.append(op)
        self._tokens.append(token)
        self._appended += 1
        if not self._wake.is_set():
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._ops)

    async def room(self) -> None:
        """Wait until the store has caught up below `HIGH_WATER_OPS` waiting ops."""
        while len(self._ops) > HIGH_WATER_OPS and self._task is not None and not self._task.done():
            if self._room is None:
                self._room = asyncio.Event()
            await self._room.wait()

    async def flush(self) -> None:
        """Wait until everything appended so far is durable."""
        target = self._appended
        if self._durable >= target or self._task is None or self._task.done():
            return  # a dead flusher (the store failed) has reported its error already
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flush_waiters.append((target, fut))
        if not self._wake.is_set():
            self._wake.set()
        await fut

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._ops:
                ops, tokens = self._ops, self._tokens
                self._ops, self._tokens = [], []
                began = time.monotonic()
                try:
                    await self._store.write(ops)
                except BaseException as exc:  # the store is broken: the engine must stop
                    if self._room is not None:
                        self._room.set()
                    self._on_error(exc)
                    # whoever waits for durability learns of the failure from the engine's
                    # error, not by waiting for ever
                    for _, fut in self._flush_waiters:
                        if not fut.done():
                            fut.set_result(None)
                    self._flush_waiters.clear()
                    if isinstance(exc, asyncio.CancelledError):
                        raise
                    return
                self.batches += 1
                self._durable += len(ops)
                if tokens:
                    self._on_durable(tokens)
                if self._flush_waiters:
                    self._release_waiters()
                if self._room is not None:
                    self._room.set()
                    self._room = None
                if self._interval and len(self._ops) < self._group:
                    wait = began + self._interval - time.monotonic()
                    if wait > 0:
                        await asyncio.sleep(wait)

    def _release_waiters(self) -> None:
        keep = []
        for target, fut in self._flush_waiters:
            if self._durable >= target:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((target, fut))
        self._flush_waiters = keep

    async def aclose(self) -> None:
        if self._task is None:
            return
        if self._ops:
            await self.flush()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
