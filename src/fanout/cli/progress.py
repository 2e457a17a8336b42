"""Live progress for a run on stderr, and the end-of-run summary drawn as a table.

The display counts what each task is doing from the engine's own state (`census`: each
task's open span, its group's wait clock), in the words of the report's breakdown: per
lane running / waiting / done, the run's waiting by cause, each provider's adaptive limit,
learned pace and Retry-After pause. It reads the run's events through a bounded
subscription only for recent activity (it may fall behind and skip some). The ETA comes
from the completions of the last `ETA_WINDOW_S` seconds, not from the run's start.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterable
from typing import Any, TextIO

from rich.console import Console, Group
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Table
from rich.text import Text

from fanout.engine.census import NOT_SELECTED, SAVING, Census, census
from fanout.engine.events import Event, ProviderDown, ProviderUp, TaskRetrying, TaskSlow
from fanout.engine.run import Run
from fanout.launch import Watch
from fanout.report import fmt_s, summary_lines

REFRESH_S = 0.2
#: the ETA is the rate of completions over this many seconds
ETA_WINDOW_S = 30.0
#: past this many tasks, the census (a pass over every task) is taken once a second only
BIG_RUN = 20_000
#: the run's waiting by cause, in the order shown, with the display's words
WAITS = (
    ("deps", "on dependencies"),
    ("lane", "for a lane slot"),
    ("rpm", "rate-limited (RPM)"),
    ("tpm", "rate-limited (TPM)"),
    ("retry_after", "paused (Retry-After)"),
    ("circuit", "provider down"),
    ("budget", "parked by the cost cap"),
    ("backoff", "backing off"),
    ("queued", "for a worker"),
    ("waiting", "not started"),
)
WAIT_KINDS = tuple(k for k, _ in WAITS)
FAILED_STATES = ("failed", "cancelled", "skipped")


def waiting_line(total: Counter[str]) -> Text | None:
    """ "waiting 80: 10 on dependencies · 40 for a lane slot · ..." (None when none waits)."""
    n = sum(total[k] for k in WAIT_KINDS)
    if not n:
        return None
    parts = [f"{total[k]} {words}" for k, words in WAITS if total[k]]
    return Text(f"waiting {n}: " + " · ".join(parts), style="yellow")


def lane_detail(c: Counter[str]) -> str:
    waiting = sum(c[k] for k in WAIT_KINDS)
    parts = [f"{c['running']} running", f"{waiting} waiting", f"{c['done']} done"]
    parts += [f"{c[k]} {k}" for k in FAILED_STATES if c[k]]
    if c[NOT_SELECTED]:
        parts.append(f"{c[NOT_SELECTED]} not selected")
    return " · ".join(parts)


def provider_lines(cen: Census, now: float) -> list[Text]:
    out = []
    for key, pm in sorted(cen.providers.items()):
        parts = []
        if pm.limit < pm.cap:
            parts.append(f"concurrency {int(pm.limit)} of {int(pm.cap)} (adaptive: lowered)")
        if pm.pace_rate is not None:
            parts.append(f"learned pace {pm.pace_rate:.1f} calls/s")
        if pm.paused_until > now:
            parts.append(f"Retry-After pause: {pm.paused_until - now:.1f} s left")
        if parts:
            out.append(Text(f"provider {key}: " + " · ".join(parts), style="cyan"))
    return out


def watch(enabled: bool) -> Watch | None:
    """The live display on stderr, when asked and stderr is a terminal."""
    if not (enabled and sys.stderr.isatty()):
        return None

    async def show(run: Run) -> None:
        if run.total:
            await LiveProgress(run, Console(stderr=True)).follow()

    return show


class EtaWindow:
    """The time left at the pace of the last `ETA_WINDOW_S` seconds' completions."""

    def __init__(self) -> None:
        self._seen: deque[tuple[float, int]] = deque()  # (time, tasks finished then)

    def update(self, now: float, finished: int, remaining: int) -> float | None:
        w = self._seen
        w.append((now, finished))
        while len(w) > 2 and now - w[1][0] >= ETA_WINDOW_S:
            w.popleft()
        t0, f0 = w[0]
        if remaining <= 0 or finished <= f0 or now - t0 < 1.0:
            return None
        return remaining / ((finished - f0) / (now - t0))


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
        self.eta = EtaWindow()
        self._census: Census | None = None
        self._census_at = -1.0

    def _on_provider(self, ev: Event) -> None:
        if isinstance(ev, ProviderDown):
            self.down[ev.key] = ev
        elif isinstance(ev, ProviderUp):
            self.down.pop(ev.key, None)
            self.recent.append(f"provider {ev.key} answers again after {fmt_s(ev.down_s)}")

    def take_census(self, now: float) -> Census:
        """What every task is doing (kept for a second on a big run: it is a full pass)."""
        run = self.run
        if self._census is None or len(run.tasks) < BIG_RUN or now - self._census_at >= 1.0:
            self._census = census(run.tasks, run.results_by_n, now)
            self._census_at = now
        return self._census

    def render(self) -> Group:
        m = self.run.stats
        loop_now = asyncio.get_running_loop().time()
        snap = m.snapshot(loop_now)
        cen = self.take_census(loop_now)
        total = cen.total()
        for name, c in sorted(cen.lanes.items()):
            tid = self._lane_ids.get(name)
            # not-selected tasks are neither done nor left to do: out of the bar
            size = max(sum(c.values()) - c[NOT_SELECTED], 1)
            if tid is None:
                tid = self._lane_ids[name] = self._bars.add_task(name, total=size, detail="")
            self._bars.update(tid, total=size, completed=c["done"], detail=lane_detail(c))
        finished = sum(total[k] for k in ("done", *FAILED_STATES, NOT_SELECTED, SAVING))
        remaining = sum(total.values()) - finished
        eta = self.eta.update(time.monotonic(), finished, remaining)
        head = Text.assemble(
            ("run ", "dim"),
            (self.run.id, "bold"),
            f"  done {total['done']}",
            (f" · failed {total['failed']}", "red") if total["failed"] else "",
            (f" · cancelled {total['cancelled']}", "red") if total["cancelled"] else "",
            f" · skipped {total['skipped']}" if total["skipped"] else "",
            f" · not selected {total[NOT_SELECTED]}" if total[NOT_SELECTED] else "",
            f" · running {total['running']} (of {m.concurrency})",
            f" · saving {total[SAVING]}" if total[SAVING] else "",
            f" · retries {snap['retries']}",
            f" · tokens {snap['input_tokens'] + snap['output_tokens']:,}",
            f" · ETA {fmt_s(eta)}" if remaining else "",
        )
        parts: list[Text | Progress] = [head]
        waits = waiting_line(total)
        if waits is not None:
            parts.append(waits)
        parts.append(self._bars)
        parts += provider_lines(cen, loop_now)
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
