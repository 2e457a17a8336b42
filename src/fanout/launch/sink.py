"""The sink protocol: what both applications' output writers implement."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from fanout.engine.run import Run

T_co = TypeVar("T_co", covariant=True)


class Sink(Protocol[T_co]):
    """Writes a run's results out. `attach` is called as the run starts (or is resumed),
    before any of its events; `finish` once it has ended (interrupted too: the sink decides
    what that means for its output); `abort` when it will never finish: leave no half
    output behind."""

    def attach(self, run: Run) -> None: ...

    async def finish(self, run: Run) -> T_co: ...

    def abort(self) -> None: ...
