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


class Presses:
    """Ctrl-C presses, counted from before the run starts: a press while it is starting (its
    first calls may already be out) is applied as soon as the run is there, rather than
    left to Python's default, which would end the process with nothing recorded."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say
        self._count = 0
        self._applied = 0
        self._launched: Launched[Any] | None = None

    def attach(self, launched: Launched[Any]) -> None:
        self._launched = launched
        self._apply()

    def press(self) -> None:
        self._count += 1
        if self._count > 2:
            raise KeyboardInterrupt
        self._apply()

    def _apply(self) -> None:
        launched = self._launched
        if launched is None:
            return
        while self._applied < self._count:
            self._applied += 1
            if self._applied == 1:
                grace_s = launched.options.grace_s
                self._say(
                    f"interrupted: starting nothing new; calls in flight may finish for "
                    f"{grace_s:g}s (Ctrl-C again to stop them now)"
                )
                launched.run.interrupt(grace_s)
            else:
                self._say("stopping the calls in flight")
                launched.run.interrupt(0)


@contextlib.contextmanager
def interrupts(say: Callable[[str], None]) -> Iterator[Presses]:
    """Handle SIGINT and SIGTERM while the block runs (main thread only); `attach` the run
    to the presses once it is started."""
    loop = asyncio.get_running_loop()
    presses = Presses(say)
    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, presses.press)
            handled.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or Windows
            pass
    try:
        yield presses
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
