"""Replicas as Ray actors: :class:`RayProvisioner` asks a Ray cluster (:class:`RayCluster`, one per gateway)
for an actor with the pool's ``num_gpus``, ``num_cpus`` and ``resources``; the actor (:mod:`.ray_actor`)
runs ``backend.command`` on the node Ray chose and reports the URL the gateway then talks to directly.

Ray is an optional extra, and most of its calls block: it is imported when a Ray pool first starts, its
blocking calls run in daemon threads (an unreachable cluster can hang them for minutes), and remote calls
are awaited as ObjectRefs. A start is refused at once (:class:`PlacementRefused`) when no node has room
now, rather than left queueing inside Ray; an actor Ray still cannot place within ``placement_timeout_s``
is killed and refused the same way. A killed actor or a lost node ends ``wait_exit`` with
:data:`ACTOR_LOST`, so the replica owner replaces it as it would a crashed process.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from frugalserve.clock import Clock, SystemClock
from frugalserve.config import PoolConfig, RayBackendConfig
from frugalserve.lifecycle.provisioners import PlacementRefused, StartFailed, within

T = TypeVar("T")

INSTALL_HINT = "backend.ray needs the ray extra: pip install 'frugalserve[ray]'"
ACTOR_LOST = -1  # wait_exit's code when the actor itself died (killed, its node lost)
CONNECT_TIMEOUT_S = 60.0
KILL_TIMEOUT_S = 10.0
RPC_TIMEOUT_S = 30.0  # one blocking Ray call (read resources, create or kill an actor)
SHUTDOWN_TIMEOUT_S = 30.0
RELEASE_TIMEOUT_S = 5.0  # Ray frees a killed actor's resources a moment after its name
REPLY_MARGIN_S = 30.0  # on top of the actor's own timeouts, for a slow or wedged actor


@dataclass(frozen=True)
class ClusterResources:
    total: Mapping[str, float]
    free_by_node: Mapping[str, Mapping[str, float]]

    def free(self, name: str) -> float:
        return sum(node.get(name, 0.0) for node in self.free_by_node.values())


def _noun(name: str, count: float) -> str:
    return f"{name}s" if name in ("GPU", "CPU") and count != 1 else name


def _has(node: Mapping[str, float], name: str, amount: float) -> bool:
    return node.get(name, 0.0) + 1e-9 >= amount  # Ray counts in fixed point: 0.1 + 0.2 is 0.3 there


def fits(need: Mapping[str, float], node: Mapping[str, float]) -> bool:
    return all(_has(node, name, amount) for name, amount in need.items() if amount > 0)


def shortfall(need: Mapping[str, float], resources: ClusterResources) -> str | None:
    """Why no node can take an actor needing ``need`` right now, or None when one can."""
    need = {name: amount for name, amount in need.items() if amount > 0}
    nodes = list(resources.free_by_node.values())
    if any(fits(need, node) for node in nodes):
        return None
    # the resources no single node has enough of; when each is somewhere but never all on one node, all
    short = [name for name in need if not any(_has(node, name, need[name]) for node in nodes)] or list(need)
    wanted = " and ".join(f"{need[name]:g} free {_noun(name, need[name])}" for name in short)
    have = "; ".join(
        f"{(total := resources.total.get(name, 0.0)):g} {_noun(name, total)}, {resources.free(name):g} free"
        for name in short
    )
    return f"Ray has no node with {wanted} (cluster: {have})"


def _why(exc: BaseException) -> str:
    """The message of a Ray error: the actor's own exception when it raised one, else Ray's first line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return str(cause) or type(cause).__name__
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


async def _result(ref: Any) -> Any:
    return await ref


class RayCluster:
    """The gateway's connection to Ray, shared by its Ray pools. Ray allows one connection per process:
    a connection this object did not make (someone called ``ray.init`` before) is used and left open.
    ``local`` starts a head in this process (Ray 2.60 then turns token auth on for this process and
    writes ~/.ray/auth_token, which later `ray start` on this machine pick up, unless RAY_AUTH_MODE is set)."""

    def __init__(
        self,
        address: str = "auto",
        namespace: str = "frugalserve",
        clock: Clock | None = None,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.address = address
        self.namespace = namespace
        self.clock: Clock = clock or SystemClock()
        self.connect_timeout_s = connect_timeout_s
        self.ray: Any = None  # the ray module, once connected
        self.actor_class: Any = None
        self._owner: _Owner | None = None  # set when this object made the connection (and so ends it)
        self._lock = asyncio.Lock()

    @classmethod
    def for_config(cls, config: RayBackendConfig, clock: Clock | None = None) -> RayCluster:
        return cls(config.address, config.namespace, clock)

    @property
    def error(self) -> type[BaseException]:
        """Ray's base error (what awaiting a remote call raises when the actor failed or died)."""
        return self.ray.exceptions.RayError if self.ray is not None else Exception

    async def blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking Ray call in a daemon thread (one that hangs must not hold the process at exit)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()

        def deliver(ok: bool, value: Any) -> None:
            if not fut.done():
                (fut.set_result if ok else fut.set_exception)(value)

        def run() -> None:
            outcome: tuple[bool, Any]
            try:
                outcome = (True, fn(*args))
            except Exception as exc:
                outcome = (False, exc)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits any more
                loop.call_soon_threadsafe(deliver, *outcome)

        threading.Thread(target=run, daemon=True, name="frugalserve-ray").start()
        return await fut

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """:meth:`blocking`, bounded: a cluster that went away must not hang the replica owner."""
        try:
            return await within(self.blocking(fn, *args), RPC_TIMEOUT_S, self.clock)
        except TimeoutError:
            raise StartFailed(
                f"Ray did not answer within {RPC_TIMEOUT_S:g}s (is the cluster at {self.address} up?)"
            ) from None

    async def connect(self) -> None:
        async with self._lock:
            if self.ray is not None:
                return
            try:
                import ray
            except ImportError:
                raise StartFailed(INSTALL_HINT) from None
            from frugalserve.lifecycle.provisioners import ray_actor

            # Nodes need Ray and the model server, not frugalserve: the actor's module travels by value.
            ray.cloudpickle.register_pickle_by_value(ray_actor)
            if not ray.is_initialized():
                await self._reachable()
                self._owner = _Owner(self._init, ray)
                try:
                    await within(asyncio.wrap_future(self._owner.started), self.connect_timeout_s, self.clock)
                except TimeoutError:
                    self._owner.stop.set()  # should it connect after all, it lets go at once
                    self._owner = None
                    raise StartFailed(
                        f"cannot connect to the Ray cluster at {self.address} within {self.connect_timeout_s:g}s"
                    ) from None
                except Exception as exc:
                    self._owner = None
                    raise StartFailed(f"cannot connect to the Ray cluster at {self.address}: {exc}") from None
            self.actor_class = ray.remote(ray_actor.ServerActor)
            self.ray = ray

    def _init(self, ray: Any) -> None:
        ray.init(
            address=self.address,  # "local" starts a head in this process; "auto" finds this machine's cluster
            namespace=self.namespace,
            ignore_reinit_error=True,
            logging_level="WARNING",
            log_to_driver=False,
        )

    async def _reachable(self) -> None:
        """Fail fast on a host:port nobody listens on (ray.init would retry for minutes)."""
        if self.address in ("auto", "local") or self.address.startswith("ray://"):
            return
        host, _, port = self.address.rpartition(":")

        def probe() -> None:
            with socket.create_connection((host, int(port)), timeout=5.0):
                pass

        try:
            await self.blocking(probe)
        except OSError as exc:
            raise StartFailed(f"cannot reach the Ray cluster at {self.address}: {exc}") from None

    async def resources(self) -> ClusterResources:
        """Total resources and what each alive node has free now."""
        ray = self.ray
        if ray is None:
            raise StartFailed("not connected to Ray")

        def read() -> ClusterResources:
            total = {k: float(v) for k, v in ray.cluster_resources().items()}
            try:
                from ray._private import state

                per_node = state.available_resources_per_node()
            except Exception:  # Ray Client, or a Ray without it: the cluster-wide view
                per_node = {"cluster": ray.available_resources()}
            free = {node: {k: float(v) for k, v in res.items()} for node, res in per_node.items()}
            return ClusterResources(total, free)

        return await self.call(read)

    async def kill(self, actor: Any, name: str, namespace: str, node_id: str, held: Mapping[str, float]) -> None:
        """Kill an actor and wait (bounded) until Ray released its name and gave the ``held`` resources back
        to ``node_id``: a start that follows a stop (a pool making room) must find the room Ray will find.
        An empty ``node_id`` skips that wait (an actor that was already dead gave them back already)."""
        ray = self.ray

        def kill() -> None:
            with contextlib.suppress(Exception):  # already dead, or the connection is gone
                ray.kill(actor, no_restart=True)

        def released() -> bool:
            try:
                ray.get_actor(name, namespace=namespace)
            except Exception:  # ValueError: no such actor; anything else: nothing more to learn
                return True
            return False

        target: dict[str, float] = {}
        if node_id:
            with contextlib.suppress(Exception):
                before = (await self.resources()).free_by_node.get(node_id, {})
                target = {k: before.get(k, 0.0) + v for k, v in held.items() if v > 0}
        with contextlib.suppress(StartFailed):
            await self.call(kill)
            deadline = self.clock.monotonic() + KILL_TIMEOUT_S
            while not await self.call(released) and self.clock.monotonic() < deadline:
                await self.clock.sleep(0.02)
        deadline = self.clock.monotonic() + RELEASE_TIMEOUT_S
        while target and self.clock.monotonic() < deadline:
            with contextlib.suppress(Exception):
                node = (await self.resources()).free_by_node.get(node_id)
                if node is None or fits(target, node):  # a node that left has nothing to give back
                    return
            await self.clock.sleep(0.05)

    async def shutdown(self) -> None:
        async with self._lock:
            owner, self._owner = self._owner, None
            self.ray = self.actor_class = None
            if owner is not None:
                owner.stop.set()
                with contextlib.suppress(TimeoutError, Exception):
                    await within(asyncio.wrap_future(owner.stopped), SHUTDOWN_TIMEOUT_S, self.clock)


class _Owner:
    """The thread that connects to Ray and later disconnects. It lives as long as the connection because
    a head started here (``local``) dies with the thread that started it: Ray starts its processes
    with PR_SET_PDEATHSIG, which fires when that *thread* ends."""

    def __init__(self, init: Callable[[Any], None], ray: Any) -> None:
        self.started: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.stopped: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.stop = threading.Event()
        threading.Thread(target=self._run, args=(init, ray), daemon=True, name="frugalserve-ray-owner").start()

    @staticmethod
    def _settle(fut: concurrent.futures.Future[None], exc: BaseException | None = None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # the waiter gave up (cancelled it)
            if exc is None:
                fut.set_result(None)
            else:
                fut.set_exception(exc)

    def _run(self, init: Callable[[Any], None], ray: Any) -> None:
        try:
            init(ray)
        except Exception as exc:
            self._settle(self.started, exc)
            self._settle(self.stopped)
            return
        self._settle(self.started)
        self.stop.wait()
        try:
            ray.shutdown()
        finally:
            self._settle(self.stopped)


class RayProvisioner:
    """Runs ``backend.command`` for one replica from a Ray actor named after it, on the node Ray picks."""

    def __init__(self, pool: PoolConfig, replica: str, clock: Clock, cluster: RayCluster) -> None:
        if pool.backend.ray is None or pool.backend.command is None:
            raise ValueError(f"pool {pool.name!r}: a Ray replica needs backend.command and backend.ray")
        self.pool = pool
        self.backend = pool.backend
        self.ray_config = pool.backend.ray
        self.command: str = pool.backend.command
        self.name = replica
        self.clock = clock
        self.cluster = cluster
        self.can_sleep = self.backend.sleep_api == "vllm"
        # on the actor's node; relative to the gateway's directory, which is what a single machine expects
        self.log_path = Path(self.backend.log_dir).resolve() / f"{replica}.log"
        self.base_url = ""
        self.placement: dict[str, Any] = {}  # node_id, node_ip, gpu_ids, actor_pid, server_pid, log_path
        self._actor: Any = None
        self._session: aiohttp.ClientSession | None = None

    def need(self) -> dict[str, float]:
        rc = self.ray_config
        return {"GPU": rc.num_gpus, "CPU": rc.num_cpus, **rc.resources}

    def actor_options(self) -> dict[str, Any]:
        rc = self.ray_config
        runtime_env = {key: value for key, value in rc.runtime_env.items()}
        env_vars = {**dict(runtime_env.get("env_vars") or {}), **self.backend.env}
        if env_vars:
            runtime_env["env_vars"] = env_vars
        return {
            "name": self.name,
            "namespace": rc.namespace,
            "num_gpus": rc.num_gpus,
            "num_cpus": rc.num_cpus,
            "resources": dict(rc.resources),
            "runtime_env": runtime_env or None,
            "max_restarts": 0,  # a dead actor is replaced by the replica owner, which knows why
            "max_task_retries": 0,
        }

    async def start(self) -> str:
        await self.stop()
        if self.ray_config.address != self.cluster.address:
            raise StartFailed(
                f"backend.ray.address is {self.ray_config.address!r}, but this gateway's Ray pools use "
                f"{self.cluster.address!r}: a process connects to one Ray cluster"
            )
        await self.cluster.connect()
        short = shortfall(self.need(), await self.cluster.resources())
        if short is not None:
            raise PlacementRefused(short)
        self._actor = await self._create()
        try:
            await self._placed(self._actor)
            info = await self._launch(self._actor)
        except BaseException:
            await self.stop()
            raise
        self.placement = {k: v for k, v in info.items() if k not in ("url", "can_sleep")}
        self.log_path = Path(info["log_path"])
        self.can_sleep = bool(info["can_sleep"])
        self.base_url = str(info["url"])
        return self.base_url

    async def _create(self) -> Any:
        options = self.actor_options()
        actor_class = self.cluster.actor_class

        def create() -> Any:
            return actor_class.options(**options).remote(self.name, str(self.log_path.parent))

        task = asyncio.ensure_future(self.cluster.blocking(create))
        try:
            return await within(asyncio.shield(task), RPC_TIMEOUT_S, self.clock)
        except (asyncio.CancelledError, TimeoutError) as exc:
            task.add_done_callback(self._kill_orphan)  # created after we stopped waiting: not ours to keep
            if isinstance(exc, TimeoutError):
                raise StartFailed(f"Ray did not create the actor {self.name!r} within {RPC_TIMEOUT_S:g}s") from None
            raise
        except Exception as exc:  # the name is taken, options Ray rejects
            raise StartFailed(f"Ray refused the actor {self.name!r}: {_why(exc)}") from None

    def _kill_orphan(self, task: asyncio.Future[Any]) -> None:
        ray = self.cluster.ray
        if ray is not None and not task.cancelled() and task.exception() is None:
            threading.Thread(target=ray.kill, args=(task.result(),), daemon=True).start()

    async def _placed(self, actor: Any) -> None:
        timeout = self.ray_config.placement_timeout_s
        try:
            self.placement = await within(_result(actor.where.remote()), timeout, self.clock)
        except TimeoutError:
            short = shortfall(self.need(), await self.cluster.resources())
            raise PlacementRefused(
                f"Ray did not place {self.name} within {timeout:g}s: {short or 'its node did not start it'}"
            ) from None
        except self.cluster.error as exc:
            raise StartFailed(f"the Ray actor {self.name} did not start: {_why(exc)}") from None

    async def _launch(self, actor: Any) -> dict[str, Any]:
        b = self.backend
        ref = actor.launch.remote(self.command, self.pool.model, b.startup_timeout_s, b.health_path, b.sleep_api)
        try:
            info: dict[str, Any] = await within(_result(ref), b.startup_timeout_s + REPLY_MARGIN_S, self.clock)
        except TimeoutError:
            raise StartFailed(f"the Ray actor {self.name} did not report a healthy backend in time") from None
        except self.cluster.error as exc:
            raise StartFailed(_why(exc)) from None
        return info

    async def _ask(self, method: str, timeout_s: float, *args: Any) -> None:
        actor = self._actor
        if actor is None:
            raise StartFailed(f"{method}: the Ray actor {self.name} is not running")
        try:
            ref = getattr(actor, method).remote(*args, timeout_s)
            await within(_result(ref), timeout_s + REPLY_MARGIN_S, self.clock)
        except TimeoutError:
            raise StartFailed(f"{method}: the Ray actor {self.name} did not answer") from None
        except self.cluster.error as exc:
            raise StartFailed(_why(exc)) from None

    async def sleep(self, level: int) -> None:
        await self._ask("sleep", self.backend.stop_timeout_s + 60, level)

    async def wake(self) -> None:
        await self._ask("wake", self.backend.startup_timeout_s)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2))
        return self._session

    async def healthy(self) -> bool:
        """Probed from the gateway, which must reach the backend anyway to send it requests."""
        if not self.base_url:
            return False
        try:
            async with self._http().get(
                self.base_url + self.backend.health_path, timeout=aiohttp.ClientTimeout(total=5.0)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False

    async def wait_exit(self) -> int:
        """The server's exit code, or :data:`ACTOR_LOST` as soon as Ray reports the actor dead."""
        actor = self._actor
        if actor is None:
            return 0
        try:
            return int(await actor.wait_exit.remote())
        except Exception:  # RayActorError, ActorDiedError, a lost node or connection: it is gone either way
            return ACTOR_LOST

    async def stop(self) -> None:
        actor, self._actor = self._actor, None
        node_id = str(self.placement.get("node_id") or "")
        self.base_url = ""
        self.placement = {}
        if actor is not None:
            # shielded: a gateway shutting down cancels us, and the actor must not outlive the replica
            await asyncio.shield(self._finish(actor, node_id))

    async def _finish(self, actor: Any, node_id: str) -> None:
        timeout = self.backend.stop_timeout_s
        try:
            if node_id:  # else Ray never placed it: a call would wait for its placement, and nothing runs
                await within(_result(actor.stop.remote(timeout)), timeout + REPLY_MARGIN_S, self.clock)
        except Exception:  # an actor that already died has nothing left to stop, nor resources to give back
            node_id = ""
        await self.cluster.kill(actor, self.name, self.ray_config.namespace, node_id, self.need())

    async def aclose(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
