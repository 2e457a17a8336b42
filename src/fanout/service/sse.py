"""A run's events as Server-Sent Events, read from the store.

Every event comes from the store, so a run of this server and a run of a CLI process in
another process stream the same way, and a finished run replays whole. `task` events (a
task reached its final state) carry the store's position as their `id:`; a client that
reconnects with `Last-Event-ID` gets every one after it, none missed. `counts` (the
request counts and status) and `run` (a status change) carry no id: they describe the run
now, and are sent at most `COUNTS_HZ` times a second however fast tasks finish. `end`
closes a run that has finished.

A slow client never slows the engine: nothing is queued for it. Each stream reads the
store at its own pace, up to `BATCH` events a read; a client that falls behind gets the
events it missed in bigger reads later, and its counts coalesced.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fanout.service.live import Reader
from fanout.service.views import FINISHED, Cursor, cursor_id, events_after

POLL_S = 0.2
COUNTS_HZ = 4.0
BATCH = 1000
KEEPALIVE_S = 15.0


def _event(kind: str, data: Any, id: str | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(
    reader: Reader,
    run_id: str,
    after: Cursor,
    *,
    finalizing: Callable[[str], bool],
    disconnected: Callable[[], Any],
) -> AsyncIterator[str]:
    """The events of `run_id` after `after`, until the run has finished and every one of
    its events is sent. `finalizing(run_id)`: the server is still writing its output."""
    cursor = after
    sent_counts: dict[str, Any] | None = None
    sent_status: str | None = None
    last_counts_t = 0.0
    last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        if await disconnected():
            return
        events, summary = await reader.run(events_after, run_id, cursor, BATCH)
        if summary is None:
            yield _event("end", {"id": run_id, "status": "gone"})
            return
        if events:
            yield "".join(_event("task", ev, cursor_id(c)) for c, ev in events)
            cursor = events[-1][0]
            last_write = time.monotonic()
        status = summary["status"]
        native = summary["fanout_status"]
        ended = native in FINISHED and not finalizing(run_id) and len(events) < BATCH
        if ended and summary["live"]:
            ended = False  # closed in the store, its process still writing its output
        counts = {"request_counts": summary["request_counts"], "status": status}
        now = time.monotonic()
        if sent_status is not None and status != sent_status:
            yield _event("run", {"id": run_id, "status": status, "fanout_status": native})
        sent_status = status
        if counts != sent_counts and (ended or now - last_counts_t >= 1.0 / COUNTS_HZ):
            yield _event("counts", counts)
            sent_counts, last_counts_t, last_write = counts, now, now
        if ended:
            yield _event("end", {"id": run_id, "status": status, "fanout_status": native})
            return
        if len(events) < BATCH:
            if now - last_write > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_write = now
            await asyncio.sleep(POLL_S)
