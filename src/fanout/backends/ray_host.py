"""What runs on the Ray workers: the provider host actor.

Nothing here imports Ray: the driver (`backends/ray.py`) wraps `ProviderHost` (I/O calls,
an async actor) and `CpuHost` (CPU-bound Python calls, a threaded actor) with
`ray.remote`. The driver talks to a host in batches, not one Ray call per attempt:
`submit` hands it every attempt that became ready in one tick of the driver's loop,
`poll` (one always outstanding) brings back every outcome finished since the last poll,
and `cancel` stops attempts by id (a Ray cancel cannot stop one item of a batch). A CPU
host's poll also carries the attempts that refill its queue, so one Ray call both brings
outcomes back and sends the next calls.

An attempt always comes back as a value, `(completion, None)` or `(None, error)`, never as
an exception escaping the worker: Ray would wrap it, and the engine must see the provider's
own typed error (with its Retry-After and rate headers) to retry and pace as it does
locally. Providers are built on the worker from their recipe, so a key is read from the
node's environment (or the runtime env the driver set) and never travels in a pickle.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fanout.errors import BadRequest, ConfigError, PermanentError, ProviderError
from fanout.providers.base import CallableProvider, Completion, Provider, Request

Outcome = tuple[Completion | None, BaseException | None]
#: one attempt sent to a host: (its id in the driver, provider name, request)
Item = tuple[int, str, Request]
#: the longest a CPU host holds a finished outcome back to send it with the next one
CPU_HOLD_S = 0.2


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a worker makes provider `name`: from its fanout.yaml spec (a dict, rebuilt with
    the node's environment), the provider object itself (given from Python), or for a
    CPU-bound Python provider its function ("package.module:function", imported on the
    worker, or the function pickled by value)."""

    name: str
    concurrency: int
    spec: dict[str, Any] | None = None
    obj: Provider | None = None
    cpu: str | bytes | None = None

    def build(self) -> Provider:
        if self.cpu is not None:
            try:
                fn = load_callable(self.cpu) if isinstance(self.cpu, str) else _unpickle(self.cpu)
            except Exception as exc:
                where = self.cpu if isinstance(self.cpu, str) else "its function"
                raise ConfigError(
                    f"{where} cannot be imported on the Ray node ({type(exc).__name__}: "
                    f"{exc}); install its package on every node or ship it with a runtime_env"
                ) from None
            return CallableProvider(fn, name=self.name, threaded=True)
        if self.obj is not None:
            return self.obj
        from fanout.providers import build_provider
        from fanout.providers.spec import ProviderSpec

        assert self.spec is not None
        spec = ProviderSpec.model_validate(self.spec)
        return build_provider(self.name, spec, concurrency=self.concurrency, env=os.environ)


class ProviderHost:
    """One I/O actor: the providers of the run, built once, their calls run concurrently
    on the actor's event loop."""

    def __init__(self, recipes: list[Recipe], cpu: bool = False) -> None:
        assert not cpu, "CPU calls run on a CpuHost"
        self._recipes = {r.name: r for r in recipes}
        self._providers: dict[str, Provider] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        self._done: list[tuple[int, Outcome]] = []
        self._ready: asyncio.Event | None = None

    async def ping(self) -> list[str]:
        """Build every I/O provider now, before the first call (a client built inside a
        call would hold the calls queued behind it and send them in a burst); the problems,
        if any, as one line each. A CPU function that does not import is not a problem
        here: each of its calls fails as a bad request, as it would locally."""
        return _build(self._recipes, self._providers)

    async def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        return _node()

    async def running(self) -> int:
        """How many attempts this actor has under way (sent, not finished, not cancelled)."""
        return len(self._running)

    async def submit(self, items: list[Item]) -> None:
        """Start every attempt of the batch; their outcomes come back through `poll`."""
        loop = asyncio.get_running_loop()
        for key, name, request in items:
            self._running[key] = loop.create_task(self._one(key, name, request))

    async def cancel(self, keys: list[int]) -> None:
        """Stop these attempts (timed out or cancelled in the driver); no outcome comes back."""
        for key in keys:
            task = self._running.pop(key, None)
            if task is not None:
                task.cancel()
        self._event().set()  # fewer calls left: a held poll may answer now

    async def poll(self, wait_s: float) -> list[tuple[int, Outcome]]:
        """Every outcome finished since the last poll; waits (up to `wait_s`) for one."""
        loop = asyncio.get_running_loop()
        end = loop.time() + wait_s
        while not self._done and (left := end - loop.time()) > 0:
            ready = self._event()
            ready.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ready.wait(), left)
        done, self._done = self._done, []
        return done

    def _event(self) -> asyncio.Event:
        if self._ready is None:
            self._ready = asyncio.Event()
        return self._ready

    async def _one(self, key: int, name: str, request: Request) -> None:
        outcome = await self.call(name, request)
        if self._running.pop(key, None) is not None:
            self._done.append((key, outcome))
            self._event().set()

    async def call(self, name: str, request: Request) -> Outcome:
        try:
            provider = built(self._providers, self._recipes, name)
        except ConfigError as exc:
            return None, BadRequest(f"provider {name!r}: {exc}")
        try:
            return await provider.complete(request), None
        except Exception as exc:
            return None, sendable(exc)


class CpuHost:
    """One CPU actor (one per CPU of the cluster, holding that CPU): a threaded actor, no
    event loop. Its calls run one at a time in a thread of its own, in the order they
    came; `submit`, `poll` and `cancel` run in Ray's threads beside it and meet it under
    one lock. A Ray call into a threaded actor costs its worker about half the CPU of one
    into an async actor (no hop onto a loop), and a finished call wakes nothing unless a
    poll is waiting for it."""

    def __init__(self, recipes: list[Recipe], cpu: bool = True) -> None:
        self._recipes = {r.name: r for r in recipes}
        self._providers: dict[str, Provider] = {}
        self._lock = threading.Condition()
        self._queue: deque[Item] = deque()
        #: ids sent and not finished nor cancelled: queued, and the one running
        self._running: set[int] = set()
        self._done: list[tuple[int, Outcome]] = []
        self._thread: threading.Thread | None = None

    def ping(self) -> list[str]:
        """Build the providers now (a CPU function that does not import is no problem
        here: each of its calls fails as a bad request, as it would locally)."""
        return _build(self._recipes, self._providers)

    def node(self) -> str:
        return _node()

    def running(self) -> int:
        with self._lock:
            return len(self._running)

    def submit(self, items: list[Item]) -> None:
        with self._lock:
            self._queue.extend(items)
            self._running.update(k for k, _, _ in items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="fanout-cpu", daemon=True)
                self._thread.start()
            self._lock.notify_all()

    def cancel(self, keys: list[int]) -> None:
        """Stop these attempts: one still queued never runs; the one running cannot be
        stopped (a thread), so it keeps this CPU until it returns, and its outcome is
        dropped. No outcome comes back for either."""
        with self._lock:
            self._running.difference_update(keys)
            self._lock.notify_all()  # fewer calls left: a held poll may answer now

    def poll(self, wait_s: float, items: list[Item] | None = None) -> list[tuple[int, Outcome]]:
        """Start `items` (as `submit` would), then every outcome finished since the last
        poll; waits (up to `wait_s`) for one.

        Outcomes are held back while this host's own queue keeps its CPU busy: until only
        the call running now is left to run here (or `CPU_HOLD_S` passed). A Ray call costs
        a few ms of CPU in the driver and in this worker, taken from the very cores the
        calls need; answered one by one, a 50 ms call paid for a poll and a submit of its
        own. Held until one call is left, the driver gets three outcomes of a queue of four
        in one answer and sends their three successors with its next poll, while the call
        left runs."""
        if items:
            self.submit(items)
        with self._lock:
            end = time.monotonic() + wait_s
            while not self._done or len(self._running) > 1:
                now = time.monotonic()
                if self._done:  # holding what is done: not for long
                    end = min(end, now + CPU_HOLD_S)
                if now >= end:
                    break
                self._lock.wait(end - now)
            done, self._done = self._done, []
            return done

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._lock.wait()
                key, name, request = self._queue.popleft()
                if key not in self._running:
                    continue  # cancelled while queued
            outcome = self.call(name, request)
            with self._lock:
                if key in self._running:
                    self._running.discard(key)
                    self._done.append((key, outcome))
                    # a waiting poll hears of the first outcome (to time its hold) and of
                    # the one that ends the hold; of those between, nothing
                    if len(self._done) == 1 or len(self._running) <= 1:
                        self._lock.notify_all()

    def call(self, name: str, request: Request) -> Outcome:
        try:
            provider = built(self._providers, self._recipes, name)
        except ConfigError as exc:
            return None, BadRequest(f"provider {name!r}: {exc}")
        try:
            if isinstance(provider, CallableProvider):
                return provider.complete_here(request), None
            return asyncio.run(provider.complete(request)), None
        except Exception as exc:
            return None, sendable(exc)
        except BaseException as exc:  # (SystemExit, CancelledError) the host's one thread,
            # which runs every call queued here, must outlive the call
            return None, PermanentError(f"the call raised {type(exc).__name__}: {exc}")


def _build(recipes: dict[str, Recipe], into: dict[str, Provider]) -> list[str]:
    """Build every provider into `into`; the I/O ones that cannot be, one line each."""
    problems = []
    for name, recipe in recipes.items():
        try:
            into[name] = recipe.build()
        except ConfigError as exc:
            if recipe.cpu is None:
                problems.append(f"provider {name!r} cannot be built on the Ray node: {exc}")
    return problems


def built(providers: dict[str, Provider], recipes: dict[str, Recipe], name: str) -> Provider:
    """The host's provider `name`, built from its recipe on first use (ConfigError if not)."""
    provider = providers.get(name)
    if provider is None:
        provider = providers[name] = recipes[name].build()
    return provider


def _node() -> str:
    """The id of the Ray node this actor runs on."""
    import ray

    return str(ray.get_runtime_context().get_node_id())


def load_callable(ref: str) -> Callable[[Request], Any]:
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


def _unpickle(data: bytes) -> Callable[[Request], Any]:
    return pickle.loads(data)  # type: ignore[no-any-return]


def sendable(exc: Exception) -> BaseException:
    """`exc` if it survives the trip back to the driver; else the same message as a plain
    error (a user's exception class may not pickle or not import on the driver)."""
    if isinstance(exc, ProviderError):
        return exc
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
