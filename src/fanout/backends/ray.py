"""`RayBackend`: provider calls executed on a Ray cluster; everything else stays in the driver.

The engine keeps the scheduler, lanes, priorities, the DAG, retries, deadlines, RPM/TPM
budgets and the store in this process: one process paces the account for the whole
cluster. Only the call itself goes out, to a pool of long-lived actors (`ray_host.py`):

- I/O providers (openai, anthropic, command, sim, python): async actors, one per node
  (`num_cpus=0`, placed on each node in turn), each holding its own provider clients
  built from the provider's recipe on the node (keys from the node's environment, or
  forwarded as runtime env variables — never in a pickle, the store or a log);
- CPU-bound Python providers (`cpu: true`): one actor per CPU of the cluster
  (`num_cpus=1`), each running one call at a time.

Calls travel in batches, not one Ray call per attempt: the attempts that start in one
tick of the driver's event loop go to each actor as one `submit`, and each actor keeps
one `poll` outstanding that brings back every outcome finished since the last. The cost
of a Ray call (an ObjectRef, a future, a hop from Ray's thread into asyncio) is paid per
batch; on a busy run a batch holds many attempts. A CPU actor's poll, once answered,
waits a moment for the engine to refill the places its outcomes freed and carries those
attempts with it: on a run of CPU calls one Ray call per actor both brings the finished
calls back and sends the next ones, as the Ray calls' CPU comes out of the cores the
calls themselves need.

Ray's own retries are off (`max_task_retries=0`): the engine is the one retry loop. The
calls of an actor lost with its process or node come back as `ConnectionLost`
(transient), so the engine retries them on the actors that remain; the lost actor is
set aside until it answers again (restarted by Ray), or, when its node is gone,
replaced by a new actor on a live node. A cancel or a timeout of an attempt cancels
that attempt on its actor (`ProviderHost.cancel`, by attempt id).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fanout.backends.ray_host import CpuHost, Item, Outcome, ProviderHost, Recipe
from fanout.errors import ConfigError, ConnectionLost, PermanentError
from fanout.providers.base import CallableProvider, Completion, Provider, Request

if TYPE_CHECKING:
    from fanout.providers.spec import ProviderSpec

INSTALL_HINT = "install the Ray extra: pip install 'fanout[ray]'"
#: seconds to wait for the cluster's head to accept a connection before giving up
CONNECT_TIMEOUT_S = 5.0
#: seconds for the actor pool to come up (a worker process per actor, fanout imported)
ACTORS_TIMEOUT_S = 120.0
#: the longest a poll waits on an idle actor before it answers with nothing
POLL_WAIT_S = 10.0
#: the longest a CPU actor's next poll waits for the attempts that refill its queue
REFILL_WAIT_S = 0.005
#: Ray calls an actor takes at once: a few submits and cancels, and its one poll (the
#: attempts themselves run as tasks on its event loop, outside this bound)
ACTOR_CALLS = 32


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@dataclass(eq=False)
class _Actor:
    """The driver's side of one actor: what it has in flight and what waits to be sent."""

    handle: Any
    node: str
    cpu: bool
    futures: dict[int, asyncio.Future[Outcome]] = field(default_factory=dict)
    outbox: dict[int, tuple[str, Request]] = field(default_factory=dict)
    cancels: list[int] = field(default_factory=list)
    lost: bool = False  # lost a call: sent nothing until it answers again or is replaced
    #: a CPU actor's next poll, waiting for `refill` attempts to carry (see `_refill`)
    parked: asyncio.Future[None] | None = None
    refill: int = 0


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
        address_from: str = "--ray-address",
    ) -> None:
        if actors is not None and actors < 1:
            raise ConfigError(f"actors={actors}: must be at least 1")
        self.address = address or "auto"
        self._specs = dict(specs or {})
        self._want_actors = actors
        self._forward_keys = forward_keys
        self._connect_timeout_s = connect_timeout_s
        #: where the user wrote the address, so a message points at the line to fix
        self._address_from = address_from
        self._ray: Any = None  # the ray module, once started
        self._connected_here = False  # this backend called ray.init (so it shuts down)
        self._io: list[_Actor] = []
        self._cpus: list[_Actor] = []
        self._cpu_names: set[str] = set()
        self._options: dict[bool, tuple[Any, dict[str, Any], list[Recipe]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        self._flushing = False
        #: Ray calls that carried attempts: far fewer than the attempts on a busy run
        self.batches = 0
        #: Ray calls that carried or brought back attempts: submits, cancels and polls
        self.calls = 0
        self._lost: tuple[type[BaseException], ...] = ()
        self._task_error: type[BaseException] = Exception

    @property
    def actors(self) -> int:
        return len(self._io)

    @property
    def live_actors(self) -> int:
        """The I/O actors taking calls (not set aside after a loss)."""
        return sum(1 for a in self._io if not a.lost)

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
        cpu: list[Recipe] = []
        for name, p in providers.items():
            if isinstance(p, CallableProvider) and p.cpu:
                cpu.append(self._cpu_recipe(name, p, concurrency))
                self._cpu_names.add(name)
            else:
                io.append(self._recipe(name, p, concurrency))
        nodes = [str(x["NodeID"]) for x in self._ray.nodes() if x.get("Alive")]
        try:
            if io:
                n = max(1, min(self._want_actors or len(nodes), concurrency))
                self._io = await self._start_actors(io, False, nodes, n)
            if cpu:
                n = max(1, min(int(self._ray.cluster_resources().get("CPU", 1)), concurrency))
                self._cpus = await self._start_actors(cpu, True, nodes, n)
        except BaseException:
            await self.aclose()
            raise

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
                f"{self._address_from} {address}: cannot connect to a Ray cluster ({first}); start "
                "one with `ray start --head`, or give its head's address (host:6379)"
            ) from None
        self._connected_here = True

    def _probe(self, address: str) -> None:
        """Fail in seconds, not minutes, when nothing listens at the head's address."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(
                f"{self._address_from} {address!r}: give host:port of the cluster's head "
                "(e.g. 10.0.0.5:6379), or auto"
            )
        try:
            with socket.create_connection((host, int(port)), timeout=self._connect_timeout_s):
                pass
        except OSError as exc:
            raise ConfigError(
                f"{self._address_from} {address}: no Ray cluster answers there ({exc}); start one "
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

    def _cpu_recipe(self, name: str, p: CallableProvider, concurrency: int) -> Recipe:
        if p.ref is not None:
            return Recipe(name, concurrency, cpu=p.ref)  # imported by name on the worker
        from ray import cloudpickle

        try:
            fn: bytes = cloudpickle.dumps(p.fn)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigError(
                f"provider {name!r}: its function cannot be sent to the Ray workers "
                f"({type(exc).__name__}: {exc}); define it at module level in a module the "
                "workers can import"
            ) from None
        return Recipe(name, concurrency, cpu=fn)

    async def _start_actors(
        self, recipes: list[Recipe], cpu: bool, nodes: list[str], n: int
    ) -> list[_Actor]:
        ray = self._ray
        options: dict[str, Any] = {
            "num_cpus": 1 if cpu else 0,
            "max_concurrency": ACTOR_CALLS,
            "max_restarts": -1,  # an actor whose process died comes back (on its node)
            "max_task_retries": 0,  # ... but the engine decides what is retried
        }
        env = self._key_env(recipes)
        if env:
            options["runtime_env"] = {"env_vars": env}
        host = ray.remote(CpuHost if cpu else ProviderHost)
        self._options[cpu] = (host, options, recipes)
        # an I/O actor on each node in turn, a hard affinity (SPREAD and a soft affinity
        # both left actors piled on the head of a busy test cluster); CPU actors go where
        # a CPU is free
        pool = [self._new_actor(cpu, nodes[i % len(nodes)] if not cpu else "") for i in range(n)]
        failed: tuple[type[BaseException], ...] = (TimeoutError, *self._lost)
        try:
            answers = await asyncio.wait_for(
                asyncio.gather(*(a.handle.ping.remote() for a in pool)), ACTORS_TIMEOUT_S
            )
        except failed as exc:
            for a in pool:
                self._kill(a)
            raise ConfigError(
                f"--backend ray: the provider actors did not start on the cluster ({exc}); "
                "check `ray status` and that fanout is installed on every node"
            ) from None
        problems = sorted({p for a in answers for p in a})
        if problems:
            for a in pool:
                self._kill(a)
            raise ConfigError(problems[0])
        if cpu:
            where = await asyncio.gather(*(a.handle.node.remote() for a in pool))
            for a, node in zip(pool, where, strict=True):
                a.node = str(node)
        for a in pool:
            self._spawn(self._poll(a))
        return pool

    def _new_actor(self, cpu: bool, node: str) -> _Actor:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host, options, recipes = self._options[cpu]
        if node:
            where = NodeAffinitySchedulingStrategy(node_id=node, soft=False)
            options = {**options, "scheduling_strategy": where}
        return _Actor(host.options(**options).remote(recipes, cpu), node, cpu)

    def _key_env(self, recipes: list[Recipe]) -> dict[str, str]:
        if not self._forward_keys:
            return {}
        env: dict[str, str] = {}
        for r in recipes:
            var = (r.spec or {}).get("api_key_env")
            if var and os.environ.get(var):
                env[var] = os.environ[var]
        return env

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _kill(self, a: _Actor) -> None:
        with contextlib.suppress(Exception):  # already gone with its node
            self._ray.kill(a.handle)

    async def aclose(self) -> None:
        ray = self._ray
        if ray is None:
            return
        for t in list(self._tasks):
            t.cancel()
        for a in (*self._io, *self._cpus):
            self._kill(a)
            self._fail(a, ConnectionLost("the Ray backend was closed"))
        self._io, self._cpus = [], []
        if self._connected_here:
            ray.shutdown()
            self._connected_here = False
        self._ray = None

    async def running(self) -> int:
        """Attempts under way on the actors, all of them together."""
        pool = [*self._io, *self._cpus]
        return sum(await asyncio.gather(*(a.handle.running.remote() for a in pool)))

    async def nodes(self) -> list[str]:
        """The Ray node id of each I/O actor, in pool order."""
        return list(await asyncio.gather(*(a.handle.node.remote() for a in self._io)))

    # -- calls ----------------------------------------------------------------------------

    def streams(self, provider: Provider) -> bool:
        return False  # a call comes back whole; the attempt's timeout still holds

    async def complete(self, name: str, provider: Provider, request: Request) -> Completion:
        if self._ray is None:
            raise ConnectionLost("the Ray backend is not started (or was closed)")
        a = _pick(self._cpus if name in self._cpu_names else self._io)
        key = next(self._ids)
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        a.futures[key] = future
        a.outbox[key] = (name, request)
        if a.parked is None:
            self._schedule_flush()
        elif len(a.outbox) >= a.refill and not a.parked.done():
            a.parked.set_result(None)  # the poll takes them
        try:
            completion, error = await future
        except asyncio.CancelledError:
            # a timeout or a cancel: stop the call on its actor too (unless never sent)
            if a.futures.pop(key, None) is not None and a.outbox.pop(key, None) is None:
                a.cancels.append(key)
                self._schedule_flush()
            raise
        if error is not None:
            raise error
        assert completion is not None
        return completion

    def _schedule_flush(self) -> None:
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        """Send what this tick gathered: one submit (and one cancel) per actor."""
        self._flushing = False
        for a in (*self._io, *self._cpus):
            if a.cancels:
                keys, a.cancels = a.cancels, []
                self._send(a, a.handle.cancel, keys, [])
            if a.outbox and a.parked is None:
                items: list[Item] = [(k, n, r) for k, (n, r) in a.outbox.items()]
                a.outbox = {}
                self.batches += 1
                self._send(a, a.handle.submit, items, [k for k, _, _ in items])

    def _send(self, a: _Actor, method: Any, arg: Any, keys: list[int]) -> None:
        try:
            self.calls += 1
            ref = method.remote(arg)
        except Exception as exc:  # the batch did not serialize
            self._fail(a, PermanentError(f"the call cannot be sent to Ray: {_line(exc)}"), keys)
            return
        self._spawn(self._sent(a, ref, keys))

    async def _sent(self, a: _Actor, ref: Any, keys: list[int]) -> None:
        try:
            await ref
        except self._task_error as exc:
            self._fail(a, PermanentError(f"the Ray worker refused the call: {_line(exc)}"), keys)
        except self._lost as exc:  # the actor's poll notices too, and sets it aside
            self._fail(a, ConnectionLost(f"the Ray worker was lost: {_line(exc)}"), keys)

    def _fail(self, a: _Actor, error: BaseException, keys: list[int] | None = None) -> None:
        for key in list(a.futures) if keys is None else keys:
            a.outbox.pop(key, None)
            future = a.futures.pop(key, None)
            if future is not None and not future.done():
                future.set_result((None, error))

    async def _poll(self, a: _Actor) -> None:
        """Bring back the actor's outcomes, a batch per round trip, for as long as it runs;
        a CPU actor's poll also carries the attempts that refill its queue."""
        items: list[Item] = []
        while True:
            try:
                self.calls += 1
                if items:
                    self.batches += 1
                    ref = a.handle.poll.remote(POLL_WAIT_S, items)
                else:
                    ref = a.handle.poll.remote(POLL_WAIT_S)
            except Exception as exc:
                if not items:  # a bare poll cannot be sent (the cluster's connection gone)
                    await self._lose(a, f"the Ray worker cannot be reached: {_line(exc)}")
                    continue
                error = PermanentError(f"the call cannot be sent to Ray: {_line(exc)}")
                self._fail(a, error, [k for k, _, _ in items])  # it did not serialize
                items = []
                continue
            try:
                done: list[tuple[int, Outcome]] = await ref
            except self._task_error as exc:
                if not items:  # a bare poll refused: the actor does not answer as it should
                    await self._lose(a, f"the Ray worker failed its poll: {_line(exc)}")
                    continue
                error = PermanentError(f"the Ray worker refused the call: {_line(exc)}")
                self._fail(a, error, [k for k, _, _ in items])  # it could not take the batch
                items = []
                continue
            except Exception as exc:  # lost with its process or node (or worse): set aside
                await self._lose(a, f"the Ray worker was lost mid-call: {_line(exc)}")
                items = []
                continue
            for key, outcome in done:
                future = a.futures.pop(key, None)
                if future is not None and not future.done():
                    future.set_result(outcome)
            items = await self._refill(a, len(done)) if a.cpu and done else []

    async def _lose(self, a: _Actor, why: str) -> None:
        """Set the actor aside, fail its calls (the engine retries them elsewhere) and
        revive it, which pauses between tries: a poll loop never spins on a dead actor."""
        a.lost = True
        self._fail(a, ConnectionLost(why))
        await self._revive(a)

    async def _refill(self, a: _Actor, n: int) -> list[Item]:
        """The attempts to send with a CPU actor's next poll: those the engine starts in
        the places the `n` outcomes just delivered freed, waited for up to REFILL_WAIT_S
        (what is still held then goes as it would have, in a submit of its own)."""
        loop = asyncio.get_running_loop()
        parked = a.parked = loop.create_future()
        a.refill = n
        if len(a.outbox) >= n:
            parked.set_result(None)
        timer = loop.call_later(REFILL_WAIT_S, _wake, parked)
        try:
            await parked
        finally:
            timer.cancel()
            a.parked = None
        items: list[Item] = [(k, name, r) for k, (name, r) in a.outbox.items()]
        a.outbox = {}
        return items

    async def _revive(self, a: _Actor) -> None:
        """Wait for a lost actor to answer again (Ray restarts its process on its node),
        or, when its node is gone, put a new actor in its place on a live node."""
        while True:
            try:
                nodes = await asyncio.to_thread(self._ray.nodes)
            except Exception:  # the head itself not answering: keep asking, calls fail fast
                await asyncio.sleep(1.0)
                continue
            alive = {str(n["NodeID"]) for n in nodes if n.get("Alive")}
            if a.node and a.node not in alive and alive:
                self._kill(a)
                pool = self._cpus if a.cpu else self._io
                held = {n: sum(1 for b in pool if b.node == n and not b.lost) for n in alive}
                node = min(sorted(alive), key=lambda n: held[n])
                fresh = self._new_actor(a.cpu, "" if a.cpu else node)
                a.handle, a.node = fresh.handle, node
            try:
                await asyncio.wait_for(a.handle.ping.remote(), 5.0)
                if a.cpu:  # placed where a CPU was free
                    a.node = str(await a.handle.node.remote())
            except Exception:  # lost, restarting, or unschedulable on a node going away
                await asyncio.sleep(1.0)
                continue
            a.lost = False
            return


def _wake(parked: asyncio.Future[None]) -> None:
    if not parked.done():
        parked.set_result(None)


def _pick(pool: list[_Actor]) -> _Actor:
    """The actor with the fewest calls in flight, among those not set aside (all of them
    when every one is: their calls then fail fast, as transient); of equals, one whose
    next poll waits to carry the call (no Ray call of its own)."""
    best: _Actor | None = None
    for a in pool:
        if not a.lost and (best is None or _load(a) < _load(best)):
            best = a
    if best is None:
        best = min(pool, key=lambda a: len(a.futures))
    return best


def _load(a: _Actor) -> float:
    waiting = a.parked is not None and len(a.outbox) < a.refill
    return len(a.futures) - (0.5 if waiting else 0.0)


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:300] if text else type(exc).__name__
