"""`Watcher`: what an engine with a persistent store does in the background: renew the
leases of the runs it runs (so another process can tell it is alive) and pick up
cancellations asked for from elsewhere (`fanout cancel RUN`), every `HEARTBEAT_S`."""

from __future__ import annotations

import asyncio
import contextlib
import time

from fanout.engine.ledger import Ledger
from fanout.store.base import Store
from fanout.store.queries import HEARTBEAT_S, LEASE_S

CANCELLED_ELSEWHERE = "cancelled from another process (fanout cancel)"


class Watcher:
    def __init__(self, ledger: Ledger, store: Store, owner: str) -> None:
        self._ledger = ledger
        self._store = store
        self._owner = owner
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="fanout-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            live = self._ledger.live_runs()
            if not live:
                continue
            now = time.time()
            for run in live:
                self._ledger.heartbeat(run, self._owner, now, now + LEASE_S)
            try:
                asked = await self._store.cancel_requests([r.id for r in live])
            except Exception:  # a busy or broken reader: the next turn asks again
                continue
            for run_id, reason in asked.items():
                target = self._ledger.get(run_id)
                if target is not None and not target.done:
                    target.cancel(reason or CANCELLED_ELSEWHERE)
