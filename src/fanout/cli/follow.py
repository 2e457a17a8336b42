"""Follow a launched run in the terminal: say its id, draw its progress, handle Ctrl-C."""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import typer

from fanout.cli.common import err

if TYPE_CHECKING:
    from fanout.launch import Launched, Watch

Out_co = TypeVar("Out_co", covariant=True)
Out = TypeVar("Out")


class Handle(Protocol[Out_co]):
    """An application's started run (`BatchRun`, `CanvasRun`)."""

    @property
    def launched(self) -> Launched[Any]: ...

    async def finish(self, watch: Watch | None = None) -> Out_co: ...


def follow(
    start: Callable[[], Coroutine[Any, Any, Handle[Out]]],
    *,
    progress: bool,
    resumed: bool = False,
    after_start: Callable[[], None] | None = None,
) -> Out:
    """Run `start()` in a new event loop and see the run to its end; the first line on
    stderr names the run and how to resume it."""
    import asyncio

    from fanout.cli.interrupts import interrupts

    async def main() -> Out:
        with interrupts(err) as presses:  # from before the start: its calls go out at once
            handle = await start()
            launched = handle.launched
            rid = launched.run_id
            if resumed:
                typer.echo(f"run {rid} resumed (resume again with: fanout resume {rid})", err=True)
            else:
                typer.echo(f"run {rid} (resume with: fanout resume {rid})", err=True)
            if after_start is not None:
                after_start()
            if launched.note:
                err(launched.note)
            presses.attach(launched)
            return await handle.finish(live(progress))

    return asyncio.run(main())


def live(progress: bool) -> Watch | None:
    """The live display, when asked and stderr is a terminal (its module loads rich: only
    then)."""
    if not (progress and sys.stderr.isatty()):
        return None
    from fanout.cli.progress import watch

    return watch(progress)
