"""What runs on the Ray workers: the provider host actor and the CPU task.

Nothing here imports Ray: the driver (`backends/ray.py`) wraps these with `ray.remote`.
An attempt always comes back as a value, `(completion, None)` or `(None, error)`, never as
an exception escaping the worker: Ray would wrap it, and the engine must see the provider's
own typed error (with its Retry-After and rate headers) to retry and pace as it does
locally. Providers are built on the worker from their recipe, so a key is read from the
node's environment (or the runtime env the driver set) and never travels in a pickle.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fanout.errors import BadRequest, ConfigError, ProviderError
from fanout.providers.base import CallableProvider, Completion, Provider, Request

Outcome = tuple[Completion | None, BaseException | None]


@dataclass(frozen=True, slots=True)
class Recipe:
    """How a worker makes provider `name`: from its fanout.yaml spec (a dict, rebuilt with
    the node's environment), or the provider object itself (given from Python)."""

    name: str
    concurrency: int
    spec: dict[str, Any] | None = None
    obj: Provider | None = None

    def build(self) -> Provider:
        if self.obj is not None:
            return self.obj
        from fanout.providers import build_provider
        from fanout.providers.spec import ProviderSpec

        assert self.spec is not None
        spec = ProviderSpec.model_validate(self.spec)
        return build_provider(self.name, spec, concurrency=self.concurrency, env=os.environ)


class ProviderHost:
    """One actor: the I/O providers of the run, built once, called concurrently on the
    actor's event loop (`max_concurrency` calls at once)."""

    def __init__(self, recipes: list[Recipe]) -> None:
        self._recipes = {r.name: r for r in recipes}
        self._providers: dict[str, Provider] = {}

    async def ping(self) -> list[str]:
        """Build every provider now, before the first call (a client built inside a call
        would hold the calls queued behind it and send them in a burst); the problems, if
        any, as one line each."""
        problems = []
        for name, recipe in self._recipes.items():
            try:
                self._providers[name] = recipe.build()
            except ConfigError as exc:
                problems.append(f"provider {name!r} cannot be built on the Ray node: {exc}")
        return problems

    async def node(self) -> str:
        """The id of the Ray node this actor runs on."""
        import ray

        return str(ray.get_runtime_context().get_node_id())

    async def call(self, name: str, request: Request) -> Outcome:
        try:
            provider = self._providers.get(name)
            if provider is None:
                provider = self._providers[name] = self._recipes[name].build()
        except ConfigError as exc:
            return None, BadRequest(f"provider {name!r} cannot be built on the Ray node: {exc}")
        try:
            return await provider.complete(request), None
        except Exception as exc:
            return None, sendable(exc)


def run_cpu(target: str | Callable[[Request], Any], name: str, request: Request) -> Outcome:
    """One call of a CPU-bound Python provider, in a Ray worker process of its own.
    `target` is "package.module:function" (imported here) or the function itself."""
    try:
        fn = load_callable(target) if isinstance(target, str) else target
    except (ImportError, AttributeError) as exc:
        return None, BadRequest(
            f"provider {name!r}: {target} cannot be imported on the Ray node ({exc}); install "
            "its package on every node or ship it with a runtime_env"
        )
    try:
        return asyncio.run(CallableProvider(fn, name=name, threaded=False).complete(request)), None
    except Exception as exc:
        return None, sendable(exc)


def load_callable(ref: str) -> Callable[[Request], Any]:
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[no-any-return]


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
