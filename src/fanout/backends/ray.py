"""`RayBackend`: provider calls executed on a Ray cluster; everything else stays in the driver.

The engine keeps the scheduler, lanes, priorities, the DAG, retries, deadlines, RPM/TPM
budgets and the store in this process: one process paces the account for the whole
cluster. Only the call itself goes out:

- I/O providers (openai, anthropic, command, sim, python): a pool of async actors, one per
  node (`num_cpus=0`, placed on each node in turn), each with `max_concurrency`
  its share of the engine's global concurrency, each holding its own provider clients
  built from the provider's recipe on the node (keys from the node's environment, or
  forwarded as runtime env variables — never in a pickle, the store or a log);
- CPU-bound Python providers (`cpu: true`): one Ray task per call with `num_cpus=1`.

Ray's own retries are off (`max_task_retries=0`, `max_retries=0`): the engine is the one
retry loop. A call lost with its node comes back as `ConnectionLost` (transient), so the
engine retries it on the actors that remain (the lost one is set aside). A cancel
or a timeout of the attempt cancels the Ray call (`ray.cancel`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fanout.backends.ray_host import Outcome, ProviderHost, Recipe, run_cpu
from fanout.errors import ConfigError, ConnectionLost, PermanentError
from fanout.providers.base import CallableProvider, Completion, Provider, Request

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

INSTALL_HINT = "install the Ray extra: pip install 'fanout[ray]'"
#: seconds to wait for the cluster's head to accept a connection before giving up
CONNECT_TIMEOUT_S = 5.0
#: seconds for the actor pool to come up (a worker process per actor, fanout imported)
ACTORS_TIMEOUT_S = 120.0


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


class RayBackend:
    """Executes attempts on the Ray cluster at `address` ("auto": the one `ray start` made
    on this machine; or "host:port" of its head). `specs`: the fanout.yaml specs of the
    providers, so each node builds its own clients; a provider without one is sent as the
    object itself (it must pickle). `actors`: how many I/O actors (default one per node).
    `forward_keys`: pass the keys the specs name from this process's environment to the
    actors as runtime env variables (else each node must have them set)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = "auto",
        *,
        specs: Mapping[str, ProviderSpec] | None = None,
        actors: int | None = None,
        forward_keys: bool = True,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        if actors is not None and actors < 1:
            raise ConfigError(f"actors={actors}: must be at least 1")
        self.address = address or "auto"
        self._specs = dict(specs or {})
        self._want_actors = actors
        self._forward_keys = forward_keys
        self._connect_timeout_s = connect_timeout_s
        self._ray: Any = None  # the ray module, once started
        self._connected_here = False  # this backend called ray.init (so it shuts down)
        self._actors: list[Any] = []
        self._load: list[int] = []  # calls in flight per actor
        self._lost_actors: set[int] = set()  # lost a call: none sent until it answers a ping
        self._watch: set[asyncio.Task[None]] = set()
        self._cpu: dict[str, Any] = {}  # provider name -> what run_cpu is given
        self._cpu_task: Any = None
        self._lost: tuple[type[BaseException], ...] = ()
        self._task_error: type[BaseException] = Exception

    @property
    def actors(self) -> int:
        return len(self._actors)

    # -- start and stop -------------------------------------------------------------------

    async def start(self, providers: Mapping[str, Provider], concurrency: int) -> None:
        try:
            import ray.exceptions as rex

            import ray
        except ImportError:
            raise ConfigError(f"--backend ray: Ray is not installed; {INSTALL_HINT}") from None
        self._ray = ray
        self._task_error = rex.RayTaskError
        # the call was lost with its worker, actor or node: the engine retries it
        self._lost = (
            rex.RayActorError,
            rex.WorkerCrashedError,
            rex.NodeDiedError,
            rex.ObjectLostError,
            rex.OwnerDiedError,
            rex.RaySystemError,
            rex.TaskCancelledError,
        )
        if not ray.is_initialized():
            self._connect(ray)
        io: list[Recipe] = []
        for name, p in providers.items():
            if isinstance(p, CallableProvider) and p.cpu:
                self._cpu[name] = self._cpu_target(name, p)
            else:
                io.append(self._recipe(name, p, concurrency))
        # each function (or its name) goes to the object store once, not with every call
        self._cpu = {name: ray.put(target) for name, target in self._cpu.items()}
        self._cpu_task = ray.remote(run_cpu).options(num_cpus=1, max_retries=0)
        if io:
            await self._start_actors(ray, io, concurrency)

    def _connect(self, ray: Any) -> None:
        address = self.address
        if address != "auto" and not address.startswith("ray://"):
            self._probe(address)
        try:
            ray.init(
                address=address,
                namespace="fanout",
                logging_level=logging.ERROR,
                log_to_driver=False,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"--ray-address {address}: cannot connect to a Ray cluster ({first}); start "
                "one with `ray start --head`, or give its head's address (host:6379)"
            ) from None
        self._connected_here = True

    def _probe(self, address: str) -> None:
        """Fail in seconds, not minutes, when nothing listens at the head's address."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"--ray-address {address!r}: give host:port of the cluster's head "
                "(e.g. 10.0.0.5:6379), or auto"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=self._connect_timeout_s):
                pass
        except OSError as exc:
            raise ConfigError(
                f"--ray-address {address}: no Ray cluster answers there ({exc}); start one "
                "with `ray start --head`, or give its head's address"
            ) from None

    def _recipe(self, name: str, p: Provider, concurrency: int) -> Recipe:
        spec = self._specs.get(name)
        if spec is not None:
            return Recipe(name, concurrency, spec=spec.model_dump())
        from ray import cloudpickle

        try:
            cloudpickle.dumps(p)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigError(
                f"provider {name!r} cannot be sent to the Ray workers ({type(exc).__name__}: "
                f"{exc}); describe it in fanout.yaml, or give RayBackend(specs=...) its spec"
            ) from None
        return Recipe(name, concurrency, obj=p)

    def _cpu_target(self, name: str, p: CallableProvider) -> Any:
        if p.ref is not None:
            return p.ref  # imported by name on the worker
        from ray import cloudpickle

        try:
            cloudpickle.dumps(p.fn)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigError(
                f"provider {name!r}: its function cannot be sent to the Ray workers "
                f"({type(exc).__name__}: {exc}); define it at module level in a module the "
                "workers can import"
            ) from None
        return p.fn

    async def _start_actors(self, ray: Any, recipes: list[Recipe], concurrency: int) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        nodes = [str(x["NodeID"]) for x in ray.nodes() if x.get("Alive")]
        n = max(1, min(self._want_actors or len(nodes), concurrency))
        share = math.ceil(concurrency / n)
        options: dict[str, Any] = {
            "num_cpus": 0,
            "max_concurrency": share,
            "max_restarts": -1,  # an actor whose process died comes back (on its node)
            "max_task_retries": 0,  # ... but the engine decides what is retried
        }
        env = self._key_env(recipes)
        if env:
            options["runtime_env"] = {"env_vars": env}
        host = ray.remote(ProviderHost)
        self._actors = []
        for i in range(n):
            # actor i on node i, round the nodes: a hard affinity, as SPREAD and a soft
            # affinity both left actors piled on the head of a busy test cluster. An actor
            # whose node is lost stays set aside (`_set_aside`); the others take its calls
            where = NodeAffinitySchedulingStrategy(node_id=nodes[i % len(nodes)], soft=False)
            self._actors.append(host.options(**options, scheduling_strategy=where).remote(recipes))
        self._load = [0] * n
        failed: tuple[type[BaseException], ...] = (TimeoutError, *self._lost)
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(a.ping.remote() for a in self._actors)), ACTORS_TIMEOUT_S
            )
        except failed as exc:
            await self.aclose()
            raise ConfigError(
                f"--backend ray: the provider actors did not start on the cluster ({exc}); "
                "check `ray status` and that fanout is installed on every node"
            ) from None
        problems = sorted({p for a in answers for p in a})
        if problems:
            await self.aclose()
            raise ConfigError(problems[0])

    def _key_env(self, recipes: list[Recipe]) -> dict[str, str]:
        if not self._forward_keys:
            return {}
        env: dict[str, str] = {}
        for r in recipes:
            var = (r.spec or {}).get("api_key_env")
            if var and os.environ.get(var):
                env[var] = os.environ[var]
        return env

    async def aclose(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for w in list(self._watch):
            w.cancel()
        for a in self._actors:
            try:
                ray.kill(a)
            except Exception:  # already gone with its node
                continue
        self._actors = []
        self._load = []
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False
        self._ray = None

    def _pick(self) -> int:
        """The actor with the fewest calls in flight, among those not set aside (all of
        them when every one is: their calls then fail fast, as transient)."""
        load = self._load
        best = -1
        for i, n in enumerate(load):
            if i not in self._lost_actors and (best < 0 or n < load[best]):
                best = i
        return best if best >= 0 else load.index(min(load))

    def _set_aside(self, i: int) -> None:
        """Actor `i` lost a call (its node or process died): send it nothing until it
        answers a ping again (its process restarted by Ray) so the engine's retries
        go to the actors that remain instead of failing on it again."""
        if i in self._lost_actors:
            return
        self._lost_actors.add(i)
        watch = asyncio.get_running_loop().create_task(self._await_back(i))
        self._watch.add(watch)
        watch.add_done_callback(self._watch.discard)

    async def _await_back(self, i: int) -> None:
        for _ in range(int(ACTORS_TIMEOUT_S)):
            if i >= len(self._actors):
                return
            try:
                await self._actors[i].ping.remote()
            except self._lost:
                await asyncio.sleep(1.0)
                continue
            self._lost_actors.discard(i)
            return

    async def nodes(self) -> list[str]:
        """The Ray node id of each I/O actor, in pool order."""
        return list(await asyncio.gather(*(a.node.remote() for a in self._actors)))

    # -- calls ----------------------------------------------------------------------------

    def streams(self, provider: Provider) -> bool:
        return False  # a call comes back whole; the attempt's timeout still holds

    async def complete(self, name: str, provider: Provider, request: Request) -> Completion:
        ray = self._ray
        if ray is None:
            raise ConnectionLost("the Ray backend is not started (or was closed)")
        target = self._cpu.get(name)
        i = -1
        if target is not None:
            ref = self._cpu_task.remote(target, name, request)
        else:
            i = self._pick()
            self._load[i] += 1
            ref = self._actors[i].call.remote(name, request)
        try:
            outcome: Outcome = await ref
        except asyncio.CancelledError:
            ray.cancel(ref)  # a timeout or a cancel: stop the call on the cluster too
            raise
        except self._task_error as exc:
            # code outside the attempt's own guard failed on the worker (say, a function
            # that does not unpickle there): retrying on the same cluster will not help
            problem = _line(exc)
            raise PermanentError(f"provider {name!r} failed on the Ray worker: {problem}") from None
        except self._lost as exc:
            if i >= 0:
                self._set_aside(i)
            raise ConnectionLost(f"the Ray worker was lost mid-call: {_line(exc)}") from None
        finally:
            if i >= 0 and i < len(self._load):
                self._load[i] -= 1
        completion, error = outcome
        if error is not None:
            raise error
        assert completion is not None
        return completion


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__
