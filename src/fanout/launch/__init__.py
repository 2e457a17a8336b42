"""The launch layer: open the store, build the engine from config + choices, start, follow,
interrupt and resume a durable run. Both applications (batch, canvas) and every front end
(the CLI, the service) use it; it draws nothing and installs no signal handler.

```python
options = RunOptions(choice=EngineChoice(concurrency=8), grace_s=5)
launched = await start(tasks, sink, kind="batch", config={...}, options=options)
launched.run            # the engine's Run: listen(), events(), stats, results()
launched.interrupt()    # on a first Ctrl-C; interrupt(now=True) on a second
done = await launched.finish(watch=progress)   # Finished: run, metrics, sink output
```
"""

from fanout.launch.options import DEFAULT_GRACE_S, Overrides, RunOptions, parse_duration
from fanout.launch.runs import (
    Finished,
    Launched,
    Reopen,
    Reopened,
    Watch,
    find_run,
    open_store,
    resume,
    run_kind,
    shared_engine,
    start,
)
from fanout.launch.setup import SIM_NOTE, EngineChoice, Setup, engine_setup, load_agents
from fanout.launch.sink import Sink

__all__ = [
    "DEFAULT_GRACE_S",
    "SIM_NOTE",
    "EngineChoice",
    "Finished",
    "Launched",
    "Overrides",
    "Reopen",
    "Reopened",
    "RunOptions",
    "Setup",
    "Sink",
    "Watch",
    "engine_setup",
    "find_run",
    "load_agents",
    "open_store",
    "parse_duration",
    "resume",
    "run_kind",
    "shared_engine",
    "start",
]
