"""A managed pool: a set of replicas the gateway runs, requests held while none is ready, then leased.

``acquire()`` is the whole request-side contract (see :class:`frugalserve.pools.Pool`): a ready replica is
leased at once (the fewest requests outstanding, or the replica an affinity key hashes to while it is not
loaded past the bound); otherwise the request waits in a bounded queue while a replica starts or wakes,
and gets 503 with ``Retry-After`` (an ETA from measured start times) when the queue is full or the wait
passes ``lifecycle.max_wait_s``.

The pool owns the set of replicas (``replicas.max`` slots, each a :class:`Replica` with its own owner
task, made the first time it is needed). How many should run is the autoscaler's business
(frugalserve.lifecycle.scaler calls :meth:`ManagedPool.add` and :meth:`ManagedPool.remove`); a removed
replica is drained first (no new leases; its requests finish) and then stopped, never with a request on
it. A request that finds nothing ready wakes or starts one replica itself, so a pool without an autoscaler
(one replica) behaves exactly as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING, Any

from frugalserve.clock import Clock
from frugalserve.config import Config, PoolConfig
from frugalserve.errors import APIError, ServiceUnavailable
from frugalserve.events import EventSink, ScaleEvent
from frugalserve.lifecycle.config import LifecycleConfig
from frugalserve.lifecycle.cron import next_prewarm
from frugalserve.lifecycle.devices import Device
from frugalserve.lifecycle.idle_auto import IdleCosts, IdleTuner
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.policy import (
    COLD_ORDER,
    bring_up_rank,
    idle_ladder_applies,
    prewarm_due,
    removal_rank,
    restart_delay,
    start_eta,
)
from frugalserve.lifecycle.provisioners import Provisioner, within
from frugalserve.lifecycle.replica import Replica
from frugalserve.metrics.upstream import PoolTelemetry
from frugalserve.pools import Lease, Pool, StaticPool, Target
from frugalserve.routing.config import AffinityConfig
from frugalserve.routing.replicas import HashRing, ReplicaLoad, choose_replica
from frugalserve.routing.snapshot import DEFAULT_WAKE_S, PoolState, PoolView, mean_or, pool_view

if TYPE_CHECKING:
    from frugalserve.lifecycle.scaler import ArrivalsReader, PoolScaler, ScaleSignals

log = logging.getLogger("frugalserve.lifecycle")

ProvisionerFactory = Callable[[str], Provisioner]  # replica name -> its provisioner


class _ManagedLease:
    __slots__ = ("_pool", "_replica", "target", "waited_s")

    def __init__(self, pool: ManagedPool, replica: Replica, target: Target, waited_s: float) -> None:
        self._pool = pool
        self._replica: Replica | None = replica
        self.target = target
        self.waited_s = waited_s
        replica.lease()
        if replica.prewarmed is not None:
            pool.prewarm_outcome(replica, "used")

    def release(self) -> None:
        if self._replica is not None:
            self._replica.release()
            self._replica = None
            self._pool.maybe_idle()


class ManagedPool:
    """A pool whose backend the gateway runs (``backend.command``, locally or on Ray), 1 to ``replicas.max``."""

    def __init__(
        self,
        config: PoolConfig,
        provisioners: ProvisionerFactory,
        clock: Clock,
        events: EventSink,
        metrics: LifecycleMetrics,
        device: Device | None = None,
        affinity: AffinityConfig | None = None,
        objective_s: float | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.clock = clock
        self.events = events
        self.metrics = metrics
        self.device = device
        self._provisioners = provisioners
        self.replicas: list[Replica] = []
        self.draining: set[str] = set()  # being removed: no new leases
        self.pending: set[str] = set()  # added by the autoscaler, not yet ready (counted as coming)
        self.scaler: PoolScaler | None = None  # set by build_managed_pools when the pool scales
        self.waiting = 0
        self.prewarms = {"used": 0, "expired": 0}
        self.last_expired: dict[str, float] = {}  # prewarm kind -> wall time its last prewarm expired unused
        self._headers = dict(config.backend.headers)
        affinity = affinity or AffinityConfig()
        self._load_factor = affinity.load_factor
        names = [self._name(i) for i in range(config.replicas.max)]
        self._ring = HashRing(names, affinity.virtual_nodes) if len(names) > 1 else None
        self._changed = asyncio.Event()
        self._started = False
        self._prewarm_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        # lifecycle.idle: auto (frugalserve.lifecycle.idle_auto): the idle periods of the pool, measured from
        # the moment nothing is in flight or held to the next request's arrival, tune the idle ladder.
        lc = config.lifecycle
        self.objective_s = objective_s  # the tier's TTFT objective: a cold start past it should stay rare
        self.idle_tuner = IdleTuner(lc.idle_auto, (lc.idle_sleep_s, lc.idle_stop_s)) if lc.idle == "auto" else None
        self._idle_since: float | None = None  # when the pool last went idle; None: busy, or not yet used
        self._idle_cfg = lc  # the lifecycle config with the thresholds in force
        self._idle_refresh: asyncio.Task[None] | None = None
        self._slot()  # replica 0 exists from the start, stopped, as a pool's first replica always did
        metrics.queued.labels(self.name).set_function(lambda: self.waiting)

    @property
    def replica(self) -> Replica:
        """The first replica (a pool with ``replicas.max: 1`` has only this one)."""
        return self.replicas[0]

    # -- the Pool protocol -------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return any(self._takes_requests(r) for r in self.replicas)

    async def acquire(self, affinity: str | None = None, exclude: Collection[str] = ()) -> Lease:
        self._arrived()
        r = self._pick(affinity, exclude)
        if r is not None:
            return _ManagedLease(self, r, self._target(r), 0.0)
        lc = self.config.lifecycle
        if self.waiting >= lc.max_queue:
            self.metrics.held_rejected.labels(self.name, "queue_full").inc()
            raise self._unavailable(f"{self.waiting} requests are already waiting for pool {self.name!r}.")
        self.waiting += 1
        t0 = self.clock.monotonic()
        try:
            while (r := self._pick(affinity, exclude)) is None:
                remaining = t0 + lc.max_wait_s - self.clock.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                # The change event is taken now, in the same step as _pick: `within` runs the wait as a task
                # that starts a loop turn later, and a replica that becomes ready in between must wake it.
                await within(self._replica_ready(self._changed), remaining, self.clock)
        except TimeoutError:
            self.metrics.held_rejected.labels(self.name, "timeout").inc()
            raise self._unavailable(
                f"no replica of pool {self.name!r} became ready within {lc.max_wait_s:g}s."
            ) from None
        except APIError:
            self.metrics.held_rejected.labels(self.name, "failed").inc()
            raise
        finally:
            self.waiting -= 1
            if r is None:  # refused, timed out or given up: the pool may be idle again from now
                self.maybe_idle()
        return _ManagedLease(self, r, self._target(r), self.clock.monotonic() - t0)

    def replicas_besides(self, names: Collection[str]) -> int:
        return sum(r.name not in names and self._takes_requests(r) for r in self.replicas)

    def ready_targets(self) -> list[Target]:
        # draining replicas included: they still serve their last requests
        return [self._target(r) for r in self.replicas if r.state == "ready"]

    async def start(self) -> None:
        self._started = True
        for r in self.replicas:
            r.start_owner()
        if self.config.lifecycle.prewarm:
            self._prewarm_task = asyncio.get_running_loop().create_task(self._prewarm_loop())
        if self.scaler is not None:
            self._update_ladders()
            self.scaler.start()

    async def stop(self) -> None:
        if self.scaler is not None:
            await self.scaler.stop()
        for task in (self._prewarm_task, *self._background):
            if task is not None:
                task.cancel()
        await asyncio.gather(*(r.shutdown() for r in self.replicas))

    # -- the replica set (the autoscaler's commands) --------------------------------------------------

    def counted(self) -> list[Replica]:
        """Replicas that count as running: ready or coming up, and not being removed."""
        return [r for r in self.replicas if self._coming(r) or self._takes_requests(r)]

    def add(
        self,
        reason: str,
        prewarm: str | None = None,
        on_refused: Callable[[str, str, bool], None] | None = None,
    ) -> Replica | None:
        """Bring one more replica up in the background (a sleeping one first: a wake is fastest); None when
        every slot is in use. ``prewarm`` ("cron" or "predictive") marks it so its use or expiry is counted;
        ``on_refused(replica, message, placement)`` hears of a start that failed or found no room."""
        r = self._cold_replica()
        if r is None:
            return None
        if prewarm is not None:
            r.prewarmed = prewarm
        self.pending.add(r.name)
        self._update_ladders()

        async def bring_up() -> None:
            try:
                await r.ensure_ready(reason)
            except APIError as exc:
                log.info("pool %s: %s could not come up: %s", self.name, r.name, exc.message)
                if on_refused is not None:
                    on_refused(r.name, r.last_error or exc.message, r.refused)
            finally:
                self.pending.discard(r.name)
                self._notify()

        self._spawn(bring_up())
        return r

    def remove(self, reason: str) -> Replica | None:
        """Drain one replica and stop it: the one with the fewest requests (the highest index among equals).
        It takes no new request from now; None when no replica may go."""
        candidates = self.counted()
        if not candidates:
            return None
        r = min(candidates, key=lambda x: removal_rank(x.state == "ready", x.in_flight, self.replicas.index(x)))
        self.draining.add(r.name)
        self._notify()

        async def drain_and_stop() -> None:
            try:
                await r.request_stop(reason)
            finally:
                self.draining.discard(r.name)

        self._spawn(drain_and_stop())
        return r

    def prewarm_outcome(self, r: Replica, outcome: str) -> None:
        """A prewarmed replica served its first request (used) or went down without one (expired)."""
        kind, r.prewarmed = r.prewarmed, None
        if kind is None:
            return
        self.prewarms[outcome] += 1
        if outcome == "expired":
            self.last_expired[kind] = self.clock.wall()
        self.metrics.prewarms.labels(self.name, kind, outcome).inc()
        n = len(self.counted())
        self.events.submit(
            ScaleEvent(
                self.clock.wall(), self.name, f"prewarm_{outcome}", n, n, kind, 0.0, f"{kind} prewarm of {r.name}"
            )
        )

    # -- admin -------------------------------------------------------------------------------------

    async def wake(self, reason: str = "admin", wait: bool = False) -> None:
        if self.is_ready():
            return
        r = self._next_up()
        if r is None:
            return
        if wait:
            await r.ensure_ready(reason)
        else:
            self._spawn(r.ensure_ready(reason))

    async def sleep(self, reason: str = "admin", stop: bool = False) -> str:
        """Drain and sleep (or stop) every replica; the first replica's resulting state."""
        up = [r for r in self.replicas if r.state not in ("stopped",) and r.name not in self.draining] or [self.replica]
        results = await asyncio.gather(*((r.request_stop(reason) if stop else r.request_sleep(reason)) for r in up))
        return str(results[0])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.config.model,
            "managed": True,
            "queue_length": self.waiting,
            "eta_s": round(self.eta_s(), 3) if not self.is_ready() else 0.0,
            "device": self.device.name if self.device else None,
            "replicas_min": self.config.replicas.min,
            "replicas_max": self.config.replicas.max,
            "prewarms": dict(self.prewarms),
            "autoscale": self.scaler.describe() if self.scaler is not None else None,
            "idle": self.describe_idle(),
            "replicas": [{**r.describe(), "removing": r.name in self.draining} for r in self.replicas],
        }

    def view(self, now: float, telemetry: PoolTelemetry | None = None) -> PoolView:
        """The best replica's state and what a request arriving now waits; measured start and wake times."""
        start_s, wake_s = self._start_s(), self._wake_s()
        live = [r for r in self.replicas if r.name not in self.draining] or self.replicas[:1]
        best_state: PoolState = "stopped"
        best_eta = math.inf
        for r in live:
            state, eta = self._replica_eta(r, now, start_s, wake_s)
            if eta < best_eta:
                best_state, best_eta = state, eta
        ready = sum(r.state == "ready" for r in live)
        up = sum(r.state in ("ready", "starting", "sleeping") for r in live)
        return pool_view(
            self.config,
            state=best_state,
            replicas=max(up, 1),
            ready_replicas=ready,
            in_flight=sum(r.in_flight for r in self.replicas),
            held=self.waiting,
            eta_s=best_eta,
            start_s=start_s,
            wake_s=wake_s,
            telemetry=telemetry,
        )

    # -- lifecycle.idle: auto ----------------------------------------------------------------------

    def _arrived(self) -> None:
        """A request arrived: the idle period it ends (if the pool was idle) is one more sample."""
        since, self._idle_since = self._idle_since, None
        if since is not None and self.idle_tuner is not None:
            self.idle_tuner.record_gap(self.clock.monotonic() - since)

    def maybe_idle(self) -> None:
        """A request left (finished or gave up): with nothing in flight and nothing held, an idle period begins.

        Measured for the pool, not per replica: a cold start follows only when no replica is ready, so what
        the ladder's last step risks is the pool's idle period (with several replicas up, the autoscaler
        removes the extra ones; the ladder acts on the last)."""
        if self.waiting == 0 and self._idle_since is None and all(r.in_flight == 0 for r in self.replicas):
            self._idle_since = self.clock.monotonic()
            self._refresh_idle_later()

    def _refresh_idle_later(self) -> None:
        """Idle with samples the thresholds have not seen yet: decide again once ``refresh_s`` allows, not only
        when the (old) ladder's timer next fires, which may be ``idle_stop_s`` away."""
        tuner = self.idle_tuner
        if tuner is None or not tuner.pending or not self._started:
            return
        if self._idle_refresh is not None and not self._idle_refresh.done():
            return
        due = tuner.due_at()

        async def refresh() -> None:
            if due is not None:
                await self.clock.sleep(due - self.clock.monotonic())
            self.idle_config(self.clock.monotonic())

        self._idle_refresh = task = asyncio.get_running_loop().create_task(refresh())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def idle_costs(self) -> IdleCosts:
        """What idling and a cold start cost this pool now: measured start and wake, price, objective, device."""
        lc, gpu = self.config.lifecycle, self.config.gpu
        usd_per_s = gpu.usd_per_hour * gpu.count / 3600 if gpu.billing == "on_demand" else 0.0
        device = self.device
        shares = device is not None and any(r.pool != self.name for r in device.replicas)
        share = min(1.0, gpu.memory_gb / device.memory_gb) if device is not None and device.memory_gb > 0 else 1.0
        return IdleCosts(
            usd_per_s=usd_per_s,
            start_s=self._start_s(),
            wake_s=self._wake_s(),
            can_sleep=any(r.provisioner.can_sleep for r in self.replicas),
            min_warm_s=lc.min_warm_s,
            usd_per_wait_s=lc.predictive_prewarm.usd_per_waiting_s,
            objective_s=self.objective_s,
            shares_device=shares,
            device_share=share,
        )

    def idle_config(self, now: float) -> LifecycleConfig:
        """The lifecycle config whose idle thresholds are in force at ``now`` (each replica's ladder reads it).
        With ``idle: auto`` the tuner re-decides at most every ``refresh_s``; a change re-arms every replica."""
        tuner = self.idle_tuner
        if tuner is None:
            return self.config.lifecycle
        t = tuner.decide(now, self.idle_costs())
        if (t.sleep_s, t.stop_s) != (self._idle_cfg.idle_sleep_s, self._idle_cfg.idle_stop_s):
            log.info("pool %s: idle thresholds now sleep %s, stop %s: %s", self.name, t.sleep_s, t.stop_s, t.reason)
            self._idle_cfg = dataclasses.replace(self.config.lifecycle, idle_sleep_s=t.sleep_s, idle_stop_s=t.stop_s)
            for r in self.replicas:
                r.rearm()
        return self._idle_cfg

    def describe_idle(self) -> dict[str, Any]:
        lc = self.config.lifecycle
        if self.idle_tuner is None:
            return {
                "mode": "manual",
                "sleep_s": lc.idle_sleep_s,
                "stop_s": lc.idle_stop_s,
                "reason": "configured (lifecycle.idle: manual)",
                "samples": None,
                "decided_at": None,
            }
        now = self.clock.monotonic()
        self.idle_config(now)
        t, at = self.idle_tuner.current, self.idle_tuner.decided_at
        assert t is not None and at is not None
        return {
            "mode": "auto",
            "sleep_s": None if t.sleep_s is None else round(t.sleep_s, 3),
            "stop_s": None if t.stop_s is None else round(t.stop_s, 3),
            "reason": t.reason,
            "samples": t.samples,
            "decided_at": round(self.clock.wall() - (now - at), 3),  # wall time
        }

    # -- internals ---------------------------------------------------------------------------------

    def _takes_requests(self, r: Replica) -> bool:
        """Ready and not being removed: what a new request may be leased to."""
        return r.state == "ready" and r.name not in self.draining

    def _name(self, index: int) -> str:
        return f"{self.name}-{index}"

    def _slot(self) -> Replica | None:
        """A new replica in the next free slot (stopped), or None when there are ``replicas.max``."""
        if len(self.replicas) >= self.config.replicas.max:
            return None
        name = self._name(len(self.replicas))
        r = Replica(self.config, name, self._provisioners(name), self.clock, self.events, self.metrics, self.device)
        r.on_change = self._on_change
        r.idle_ladder = self._ladder_applies()
        if self.idle_tuner is not None:
            r.idle_config = self.idle_config
        if self.device is not None:
            self.device.replicas.append(r)
        self.replicas.append(r)
        if self._started:
            r.start_owner()
        return r

    def _cold_replica(self) -> Replica | None:
        cold = [
            r
            for r in self.replicas
            if r.state in COLD_ORDER and r.name not in self.draining and r.name not in self.pending
        ]
        if cold:
            return min(cold, key=lambda r: bring_up_rank(r.state, self.replicas.index(r)))
        return self._slot()

    def _pick(self, affinity: str | None, exclude: Collection[str]) -> Replica | None:
        ready = [r for r in self.replicas if self._takes_requests(r)]
        if not ready:
            return None
        if len(ready) == 1:
            return ready[0]
        if exclude:
            ready = [r for r in ready if r.name not in exclude] or ready
        loads = [ReplicaLoad(r.name, r.in_flight) for r in ready]
        name = choose_replica(loads, affinity, self._ring, self._load_factor)
        return next(r for r in ready if r.name == name)

    def _target(self, r: Replica) -> Target:
        return Target(r.base_url, r.name, self._headers)

    async def _replica_ready(self, changed: asyncio.Event) -> None:
        """Return when some replica may have become ready since ``changed`` was taken; bring one up if none
        is on its way. Raises the 503 of a failed start when nothing else is coming."""
        if changed.is_set() or self.is_ready():
            return
        target = self._next_up()
        if target is None:  # every slot busy going down: wait for a change
            await changed.wait()
            return
        up = asyncio.ensure_future(target.ensure_ready("request"))
        other = asyncio.ensure_future(changed.wait())
        try:
            await asyncio.wait((up, other), return_when=asyncio.FIRST_COMPLETED)
        finally:
            other.cancel()
        if up.done():
            exc = up.exception()
            if exc is not None and not self.is_ready() and not self._coming_besides(target):
                raise exc
            return
        up.cancel()

    def _next_up(self) -> Replica | None:
        """The replica a waiting request (or an admin wake) waits for: one already on its way, else the one
        quickest to bring up; None when every slot is busy going down."""
        coming = [r for r in self.replicas if self._coming(r)]
        return coming[0] if coming else self._cold_replica()

    def _coming(self, r: Replica) -> bool:
        return (r.state == "starting" or r.name in self.pending) and r.name not in self.draining

    def _coming_besides(self, target: Replica) -> bool:
        return any(r is not target and self._coming(r) for r in self.replicas)

    def _on_change(self, r: Replica) -> None:
        if r.prewarmed is not None and r.state in ("stopping", "sleeping", "stopped", "failed"):
            self.prewarm_outcome(r, "expired")
        self._notify()

    def _ladder_applies(self) -> bool:
        return idle_ladder_applies(self.config.replicas.min, self.scaler is not None, len(self.counted()))

    def _update_ladders(self) -> None:
        on = self._ladder_applies()
        for r in self.replicas:
            r.set_idle_ladder(on)

    def _notify(self) -> None:
        self._update_ladders()
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _default_start_s(self) -> float:
        """Until a start has been measured."""
        return min(self.config.backend.startup_timeout_s, 30.0)

    def _start_s(self) -> float:
        starts = [s for r in self.replicas for s in r.recent_starts["start"]]
        return mean_or(starts, self._default_start_s())

    def _wake_s(self) -> float:
        wakes = [s for r in self.replicas for s in r.recent_starts["wake"]]
        return mean_or(wakes, DEFAULT_WAKE_S[self.config.lifecycle.sleep_level])

    def _replica_eta(self, r: Replica, now: float, start_s: float, wake_s: float) -> tuple[PoolState, float]:
        lc = self.config.lifecycle
        elapsed = now - r.since
        if r.state == "ready":
            return "ready", 0.0
        if r.state == "starting":
            # A wake keeps the running process's URL; a start learns it only once the process is up.
            return ("waking", max(0.0, wake_s - elapsed)) if r.base_url else ("starting", max(0.0, start_s - elapsed))
        if r.state == "stopping":  # on its way down: a request waits for that, then brings it back
            return ("sleeping", wake_s) if r.provisioner.can_sleep else ("stopped", start_s)
        if r.state == "failed":
            backoff = restart_delay(r.failures, lc.restart_backoff_s, lc.restart_backoff_max_s)
            return "failed", start_s + max(0.0, backoff - elapsed)
        if r.state == "sleeping":
            return "sleeping", wake_s
        return "stopped", start_s

    def eta_s(self) -> float:
        now = self.clock.monotonic()
        best = math.inf
        for r in self.replicas:
            if r.name in self.draining:
                continue
            if r.state == "ready":
                return 0.0
            kind = "wake" if r.state == "sleeping" else "start"
            elapsed = now - r.since if r.state == "starting" else None
            best = min(best, start_eta(elapsed, list(r.recent_starts[kind]), self._default_start_s()))
        return 0.0 if best == math.inf else best

    def _unavailable(self, message: str) -> ServiceUnavailable:
        retry = max(1, math.ceil(self.eta_s()))
        return ServiceUnavailable(f"{message} Retry in about {retry}s.", headers={"Retry-After": str(retry)})

    def _spawn(self, work: Any) -> None:
        """Run ``work`` in the background; its 503 has nobody to go to (a caller that cares catches it)."""

        async def run() -> None:
            with contextlib.suppress(APIError):
                await work

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _prewarm_loop(self) -> None:
        lc = self.config.lifecycle
        after = self.clock.wall()
        while True:
            fire = next_prewarm(lc.prewarm, lc.timezone, after)
            if fire is None:
                return
            await self.clock.sleep(fire - self.clock.wall())
            if prewarm_due(fire, self.clock.wall()):
                after = fire
                log.info("pool %s: prewarm (%s)", self.name, ", ".join(lc.prewarm))
                if not self.is_ready() and not any(self._coming(r) for r in self.replicas):
                    self.add("prewarm", prewarm="cron")


def ray_cluster(config: Config) -> Any:
    """The gateway's one connection to Ray (frugalserve.lifecycle.provisioners.ray.RayCluster), or None when
    no pool runs on Ray. Every Ray pool names the same cluster (config validation checks it)."""
    ray_pools = [p.backend.ray for p in config.pools if p.backend.ray is not None and p.backend.command]
    if not ray_pools:
        return None
    from frugalserve.lifecycle.provisioners.ray import RayCluster

    return RayCluster.for_config(ray_pools[0])


def provisioner_factory(pool: PoolConfig, clock: Clock, ray: Any = None) -> ProvisionerFactory:
    """How the pool's replicas are run: a local process each, or a Ray actor each (``backend.ray``)."""
    if pool.backend.ray is not None:
        from frugalserve.lifecycle.provisioners.ray import RayProvisioner  # ray is an optional extra

        return lambda name: RayProvisioner(pool, name, clock, ray)
    from frugalserve.lifecycle.provisioners.command import CommandProvisioner

    return lambda name: CommandProvisioner(pool, name, clock)


def build_pools(
    config: Config,
    clock: Clock,
    events: EventSink,
    metrics: LifecycleMetrics,
    signals: ScaleSignals | None = None,
    arrivals: ArrivalsReader | None = None,
    ray: Any = None,
) -> list[Pool]:
    """Every pool of the config, in its order: a :class:`ManagedPool` for each ``backend.command`` (sharing
    one ledger per device, with an autoscaler when it may run more than one replica, keeps a floor, or
    prewarms predictively), a :class:`~frugalserve.pools.StaticPool` for each url backend."""
    from frugalserve.lifecycle.scaler import PoolScaler, ScaleSignals

    signals = signals or ScaleSignals()
    devices = {d.name: Device(d.name, d.memory_gb, clock) for d in config.devices}
    pools: list[Pool] = []
    for p in config.pools:
        if p.backend.command is None:
            pools.append(StaticPool(p, config.routing.affinity, metrics.meter))
            continue
        device = devices.get(p.gpu.device) if p.gpu.device else None
        factory = provisioner_factory(p, clock, ray)
        objective_s = config.routing.objective(p.tier).slo_ms / 1000.0 if p.tier is not None else None
        pool = ManagedPool(p, factory, clock, events, metrics, device, config.routing.affinity, objective_s)
        if PoolScaler.wanted(pool):
            pool.scaler = PoolScaler(pool, signals, clock, events, metrics, config.routing, arrivals)
        pools.append(pool)
    return pools
