"""What an engine with a persistent store does in the background: renew the leases of the
runs it runs (so another process can tell it is alive) and pick up cancellations asked for
from elsewhere (`fanout cancel RUN`), every `HEARTBEAT_S`."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from fanout.store.base import Heartbeat
from fanout.store.queries import HEARTBEAT_S, LEASE_S

if TYPE_CHECKING:
    from fanout.engine.engine import Engine

CANCELLED_ELSEWHERE = "cancelled from another process (fanout cancel)"


async def watch(engine: Engine) -> None:
    journal = engine._journal
    assert journal is not None
    while True:
        await asyncio.sleep(HEARTBEAT_S)
        live = [r for r in engine._runs.values() if r.status == "running" and not r.done]
        if not live:
            continue
        now = time.time()
        for run in live:
            journal.append(Heartbeat(run.id, engine.owner, now, now + LEASE_S))
        try:
            asked = await engine.store.cancel_requests([r.id for r in live])
        except Exception:  # a busy or broken reader: the next turn asks again
            continue
        for run_id, reason in asked.items():
            target = engine._runs.get(run_id)
            if target is not None and not target.done:
                target.cancel(reason or CANCELLED_ELSEWHERE)
