"""fanout: run many LLM agent calls at once, fast and safely.

```python
async with fanout.Engine(concurrency=32) as engine:
    run = engine.submit([fanout.Task(p) for p in prompts])
    await run.wait()
    results = await run.results()
```

The names below are loaded when first used (`fanout.Engine` imports the engine then), so
`import fanout` and the `fanout` command, which lives in `fanout.cli`, do not pay for the
whole library at start-up.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from fanout.api import run_batch as run_batch
    from fanout.engine.engine import Engine as Engine
    from fanout.engine.events import Event as Event
    from fanout.engine.events import EventsDropped as EventsDropped
    from fanout.engine.events import LimiterChanged as LimiterChanged
    from fanout.engine.events import RunFinished as RunFinished
    from fanout.engine.events import RunStarted as RunStarted
    from fanout.engine.events import TaskFinished as TaskFinished
    from fanout.engine.events import TaskRetrying as TaskRetrying
    from fanout.engine.events import TasksAdded as TasksAdded
    from fanout.engine.events import TaskSlow as TaskSlow
    from fanout.engine.events import TaskStarted as TaskStarted
    from fanout.engine.limits import ProviderLimits as ProviderLimits
    from fanout.engine.retry import RetryPolicy as RetryPolicy
    from fanout.engine.run import Run as Run
    from fanout.errors import ConfigError as ConfigError
    from fanout.errors import FanoutError as FanoutError
    from fanout.errors import InputError as InputError
    from fanout.errors import PlanError as PlanError
    from fanout.errors import ProviderError as ProviderError
    from fanout.executor import ParallelAgentExecutor as ParallelAgentExecutor
    from fanout.providers.base import CallableProvider as CallableProvider
    from fanout.providers.base import Completion as Completion
    from fanout.providers.base import Provider as Provider
    from fanout.providers.base import Request as Request
    from fanout.providers.sim import SimConfig as SimConfig
    from fanout.providers.sim import SimProvider as SimProvider
    from fanout.store.base import MemoryStore as MemoryStore
    from fanout.store.base import RunBusy as RunBusy
    from fanout.store.base import Store as Store
    from fanout.store.sqlite import SqliteStore as SqliteStore
    from fanout.tasks import ErrorInfo as ErrorInfo
    from fanout.tasks import Priority as Priority
    from fanout.tasks import Result as Result
    from fanout.tasks import Task as Task
    from fanout.tasks import TaskState as TaskState

__version__ = "0.1.0"

#: each public name -> the module that defines it
_WHERE: dict[str, str] = {
    "CallableProvider": "fanout.providers.base",
    "Completion": "fanout.providers.base",
    "ConfigError": "fanout.errors",
    "Engine": "fanout.engine.engine",
    "ErrorInfo": "fanout.tasks",
    "Event": "fanout.engine.events",
    "EventsDropped": "fanout.engine.events",
    "FanoutError": "fanout.errors",
    "InputError": "fanout.errors",
    "LimiterChanged": "fanout.engine.events",
    "MemoryStore": "fanout.store.base",
    "ParallelAgentExecutor": "fanout.executor",
    "PlanError": "fanout.errors",
    "Priority": "fanout.tasks",
    "Provider": "fanout.providers.base",
    "ProviderError": "fanout.errors",
    "ProviderLimits": "fanout.engine.limits",
    "Request": "fanout.providers.base",
    "Result": "fanout.tasks",
    "RetryPolicy": "fanout.engine.retry",
    "Run": "fanout.engine.run",
    "RunBusy": "fanout.store.base",
    "RunFinished": "fanout.engine.events",
    "RunStarted": "fanout.engine.events",
    "SimConfig": "fanout.providers.sim",
    "SimProvider": "fanout.providers.sim",
    "SqliteStore": "fanout.store.sqlite",
    "Store": "fanout.store.base",
    "Task": "fanout.tasks",
    "TaskFinished": "fanout.engine.events",
    "TaskRetrying": "fanout.engine.events",
    "TaskSlow": "fanout.engine.events",
    "TaskStarted": "fanout.engine.events",
    "TaskState": "fanout.tasks",
    "TasksAdded": "fanout.engine.events",
    "run_batch": "fanout.api",
}

__all__ = [
    "CallableProvider",
    "Completion",
    "ConfigError",
    "Engine",
    "ErrorInfo",
    "Event",
    "EventsDropped",
    "FanoutError",
    "InputError",
    "LimiterChanged",
    "MemoryStore",
    "ParallelAgentExecutor",
    "PlanError",
    "Priority",
    "Provider",
    "ProviderError",
    "ProviderLimits",
    "Request",
    "Result",
    "RetryPolicy",
    "Run",
    "RunBusy",
    "RunFinished",
    "RunStarted",
    "SimConfig",
    "SimProvider",
    "SqliteStore",
    "Store",
    "Task",
    "TaskFinished",
    "TaskRetrying",
    "TaskSlow",
    "TaskStarted",
    "TaskState",
    "TasksAdded",
    "run_batch",
]


def __getattr__(name: str) -> _typing.Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'fanout' has no attribute {name!r}")
    value = getattr(_importlib.import_module(where), name)
    globals()[name] = value  # the next look-up is a plain one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
