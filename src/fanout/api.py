"""Blocking entry points for scripts that do not run an event loop of their own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fanout.engine.engine import Engine
from fanout.errors import FanoutError
from fanout.tasks import Result, Task


def run_batch(tasks: Iterable[Task | str], **engine_options: Any) -> list[Result]:
    """Run `tasks` (Task objects or plain prompts) to the end and return their results in
    input order. Keyword arguments go to `Engine`. For scripts: inside a running event loop,
    use `async with Engine(...)` instead."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise FanoutError(
            "run_batch() blocks, so it cannot run inside an event loop: "
            "use `async with fanout.Engine(...) as engine: await engine.run(tasks)`"
        )
    items = [t if isinstance(t, Task) else Task(t) for t in tasks]

    async def main() -> list[Result]:
        async with Engine(**engine_options) as engine:
            run = await engine.run(items, kind="batch")
            return await run.results()

    return asyncio.run(main())
