"""Live progress for a run on stderr, and the end-of-run summary drawn as a table.

The display reads the run's events through a bounded subscription (it may fall behind and
skip some: it only shows recent activity from them) and its counts from the run's metrics,
which consume the same stream synchronously and never lose an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import deque
from collections.abc import AsyncIterable
from typing import Any, TextIO

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from fanout.engine.events import Event, ProviderDown, ProviderUp, TaskRetrying, TaskSlow
from fanout.engine.run import Run
from fanout.launch import Watch
from fanout.report import fmt_s, summary_lines

REFRESH_S = 0.2


def watch(enabled: bool) -> Watch | None:
    """The live display on stderr, when asked and stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        return None

    async def show(run: Run) -> None:
        if run.total:
            await LiveProgress(run, Console(stderr=True)).follow()

    return show


class LiveProgress:
    """A rich live view: totals, one bar per lane, retries, tokens, ETA, recent retries."""

    def __init__(self, run: Run, console: Console) -> None:
        self.run = run
        self.console = console
        self.recent: deque[str] = deque(maxlen=4)
        self._bars = Progress(
            TextColumn("{task.description:>14}"),
            BarColumn(bar_width=36),
            TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"),
            console=console,
            expand=False,
        )
        self._lane_ids: dict[str, TaskID] = {}
        self.down: dict[str, ProviderDown] = {}  # providers whose circuit is open now
        run.listen(self._on_provider)  # never misses one, unlike the bounded stream

    def _on_provider(self, ev: Event) -> None:
        if isinstance(ev, ProviderDown):
            self.down[ev.key] = ev
        elif isinstance(ev, ProviderUp):
            self.down.pop(ev.key, None)
            self.recent.append(f"provider {ev.key} answers again after {fmt_s(ev.down_s)}")

    def render(self) -> Group:
        m = self.run.stats
        loop_now = asyncio.get_running_loop().time()
        snap = m.snapshot(loop_now)
        for name, lane in sorted(m.lanes.items()):
            tid = self._lane_ids.get(name)
            if tid is None:
                tid = self._lane_ids[name] = self._bars.add_task(name, total=lane.total, detail="")
            self._bars.update(
                tid,
                total=max(lane.total, 1),
                completed=lane.done + lane.failed,
                detail=f"{lane.running} running · {lane.failed} not done",
            )
        head = Text.assemble(
            ("run ", "dim"),
            (self.run.id, "bold"),
            f"  done {snap['done']}",
            f" · running {snap['running']}",
            f" · waiting {snap['waiting']}",
            (f" · failed {snap['failed']}", "red" if snap["failed"] else ""),
            f" · retries {snap['retries']}",
            f" · tokens {snap['input_tokens'] + snap['output_tokens']:,}",
            f" · ETA {fmt_s(snap['eta_s'])}",
        )
        parts: list[Text | Progress] = [head, self._bars]
        for key, ev in sorted(self.down.items()):
            parts.append(
                Text(
                    f"provider {key} down for {fmt_s(loop_now - ev.since)}: sending only a "
                    f"probe now and then ({ev.error})",
                    style="red",
                )
            )
        if self.recent:
            parts.append(Text("\n".join(self.recent), style="dim"))
        return Group(*parts)

    async def follow(self) -> None:
        from rich.live import Live

        events = self.run.events(maxsize=1000)
        with Live(self.render(), console=self.console, refresh_per_second=5) as live:
            consumer = asyncio.ensure_future(self._consume(events))
            try:
                while not self.run.done:
                    live.update(self.render())
                    await asyncio.sleep(REFRESH_S)
                live.update(self.render())
            finally:
                consumer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer

    async def _consume(self, events: AsyncIterable[Event]) -> None:
        async for ev in events:
            if isinstance(ev, TaskRetrying):
                self.recent.append(
                    f"retry {ev.task.key} attempt {ev.attempt}: {ev.error.kind} "
                    f"(waiting {fmt_s(ev.delay)})"
                )
            elif isinstance(ev, TaskSlow):
                self.recent.append(f"slow {ev.task.key}: running for {fmt_s(ev.elapsed)}")


def print_summary(m: dict[str, Any], out: TextIO) -> None:
    console = Console(file=out, highlight=False, soft_wrap=True)
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in summary_lines(m):
        table.add_row(label, value)
    console.print(table)
