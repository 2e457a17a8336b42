"""What a durable run does on Ctrl-C or SIGTERM, and its live progress: shared by
`fanout batch`, `fanout resume` and `fanout canvas run`.

Once: nothing new starts, calls in flight may finish for `grace_s`, the run ends
"interrupted" and can be resumed. Twice: calls in flight stop now (recorded as
interrupted, sent again on resume). A third time: KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fanout.engine.run import Run


@contextlib.contextmanager
def interrupts(run: Run, grace_s: float, say: Callable[[str], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM for `run` while the block runs (main thread only)."""
    loop = asyncio.get_running_loop()
    presses = 0

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            say(
                f"interrupted: starting nothing new; calls in flight may finish for "
                f"{grace_s:g}s (Ctrl-C again to stop them now)"
            )
            run.interrupt(grace_s)
        elif presses == 2:
            say("stopping the calls in flight")
            run.interrupt(0)
        else:
            raise KeyboardInterrupt

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


async def show_progress(run: Run, enabled: bool) -> None:
    """The live display on stderr until the run ends, when asked and stderr is a terminal."""
    if enabled and sys.stderr.isatty() and run.total:
        from rich.console import Console

        from fanout.progress import LiveProgress

        await LiveProgress(run, Console(stderr=True)).follow()
