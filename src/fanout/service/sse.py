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
events it missed in bigger reads later, and its counts coalesced. The reads are made and
turned into SSE text on the reader threads, never on the engine's event loop, and streams
at the same place in the same run share one read (`Feeds`): ten dashboards on one run cost
about what one does.
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


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _event(kind: str, data: Any, id: str | None = None) -> str:
    head = f"id: {id}\n" if id is not None else ""
    return f"{head}event: {kind}\ndata: {_dumps(data)}\n\n"


#: what one read gives: the events as SSE text, how many, the cursor after them, the run now
Read = tuple[str, int, Cursor, dict[str, Any] | None]


def read_events(db: Any, run_id: str, after: Cursor, limit: int) -> Read:
    """On a reader thread: the events after `after`, already SSE text."""
    events, summary = events_after(db, run_id, after, limit)
    text = "".join(_event("task", ev, cursor_id(c)) for c, ev in events)
    return text, len(events), (events[-1][0] if events else after), summary


class Feeds:
    """One store read for every stream at the same place in the same run: a read is kept
    for `POLL_S / 2` and given to the streams that ask for it meanwhile."""

    def __init__(self, reader: Reader) -> None:
        self.reader = reader
        self._recent: dict[tuple[str, Cursor], tuple[float, asyncio.Future[Read]]] = {}

    async def read(self, run_id: str, after: Cursor) -> Read:
        now = time.monotonic()
        key = (run_id, after)
        hit = self._recent.get(key)
        if hit is not None and now - hit[0] < POLL_S / 2:
            return await asyncio.shield(hit[1])
        if self._recent:  # forget reads nobody can share any more (they hold their text)
            self._recent = {k: v for k, v in self._recent.items() if now - v[0] < POLL_S / 2}
        fut = asyncio.ensure_future(self.reader.run(read_events, run_id, after, BATCH))
        self._recent[key] = (now, fut)
        return await asyncio.shield(fut)


async def stream(
    feeds: Feeds,
    run_id: str,
    after: Cursor,
    *,
    busy: Callable[[str], bool],
    disconnected: Callable[[], Any],
) -> AsyncIterator[str]:
    """The events of `run_id` after `after`, until the run has finished and every one of
    its events is sent. `busy(run_id)`: this server still runs it or writes its output."""
    cursor = after
    sent_counts: dict[str, Any] | None = None
    sent_status: str | None = None
    last_counts_t = 0.0
    last_write = time.monotonic()
    yield "retry: 1000\n\n"
    while True:
        if await disconnected():
            return
        text, n, cursor, summary = await feeds.read(run_id, cursor)
        if summary is None:
            yield _event("end", {"id": run_id, "status": "gone"})
            return
        if n:
            yield text
            last_write = time.monotonic()
        status = summary["status"]
        native = summary["fanout_status"]
        ended = native in FINISHED and not busy(run_id) and n < BATCH
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
        if n < BATCH:
            if now - last_write > KEEPALIVE_S:
                yield ": keep-alive\n\n"
                last_write = now
            await asyncio.sleep(POLL_S)
