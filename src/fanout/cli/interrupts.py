"""What a run followed in the terminal does on Ctrl-C or SIGTERM.

Once: nothing new starts, calls in flight may finish for the run's grace, the run ends
"interrupted" and can be resumed. Twice: calls in flight stop now (recorded as interrupted,
sent again on resume). A third time: KeyboardInterrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fanout.launch import Launched


@contextlib.contextmanager
def interrupts(launched: Launched[Any], say: Callable[[str], None]) -> Iterator[None]:
    """Handle SIGINT and SIGTERM for `launched` while the block runs (main thread only)."""
    loop = asyncio.get_running_loop()
    presses = 0
    grace_s = launched.options.grace_s

    def on_signal() -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            say(
                f"interrupted: starting nothing new; calls in flight may finish for "
                f"{grace_s:g}s (Ctrl-C again to stop them now)"
            )
            launched.run.interrupt(grace_s)
        elif presses == 2:
            say("stopping the calls in flight")
            launched.run.interrupt(0)
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
