"""A managed pool: requests are held while its replica is cold, then leased to it.

``acquire()`` is the whole request-side contract (see :class:`frugalserve.pools.Pool`): a ready replica is
leased at once; otherwise the request waits in a bounded queue while the replica owner starts or wakes
it, and gets 503 with ``Retry-After`` (an ETA from measured start times) when the queue is full or the
wait passes ``lifecycle.max_wait_s``. Prewarm schedules run here as a small task per pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Collection
from typing import Any

from frugalserve.clock import Clock
from frugalserve.config import Config, PoolConfig
from frugalserve.errors import APIError, ServiceUnavailable
from frugalserve.events import EventSink
from frugalserve.lifecycle.cron import next_prewarm
from frugalserve.lifecycle.devices import Device
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.policy import prewarm_due, restart_delay, start_eta
from frugalserve.lifecycle.provisioner import CommandProvisioner, Provisioner, within
from frugalserve.lifecycle.replica import Replica
from frugalserve.metrics.upstream import PoolTelemetry
from frugalserve.pools import Lease, Target
from frugalserve.routing.snapshot import DEFAULT_WAKE_S, PoolState, PoolView, mean_or, pool_view

log = logging.getLogger("frugalserve.lifecycle")


class _ManagedLease:
    __slots__ = ("_replica", "target", "waited_s")

    def __init__(self, replica: Replica, target: Target, waited_s: float) -> None:
        self._replica: Replica | None = replica
        self.target = target
        self.waited_s = waited_s
        replica.lease()

    def release(self) -> None:
        if self._replica is not None:
            self._replica.release()
            self._replica = None


class ManagedPool:
    """A pool whose backend the gateway runs (``backend.command``), with one replica."""

    def __init__(
        self,
        config: PoolConfig,
        provisioner: Provisioner,
        clock: Clock,
        events: EventSink,
        metrics: LifecycleMetrics,
        device: Device | None = None,
    ) -> None:
        self.name = config.name
        self.config = config
        self.clock = clock
        self.metrics = metrics
        self.replica = Replica(config, f"{config.name}-0", provisioner, clock, events, metrics, device)
        if device is not None:
            device.replicas.append(self.replica)
        self.device = device
        self.waiting = 0
        self._headers = dict(config.backend.headers)
        self._prewarm_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        metrics.queued.labels(self.name).set_function(lambda: self.waiting)

    # -- the Pool protocol -------------------------------------------------------------------------

    def is_ready(self) -> bool:
        return self.replica.state == "ready"

    async def acquire(self, affinity: str | None = None, exclude: Collection[str] = ()) -> Lease:
        # One replica: nothing to choose (the autoscaling issue brings several, chosen as StaticPool does).
        r = self.replica
        if r.state == "ready":
            return _ManagedLease(r, Target(r.base_url, r.name, self._headers), 0.0)
        lc = self.config.lifecycle
        if self.waiting >= lc.max_queue:
            self.metrics.held_rejected.labels(self.name, "queue_full").inc()
            raise self._unavailable(f"{self.waiting} requests are already waiting for pool {self.name!r}.")
        self.waiting += 1
        t0 = self.clock.monotonic()
        try:
            while r.state != "ready":
                remaining = t0 + lc.max_wait_s - self.clock.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                await within(r.ensure_ready("request"), remaining, self.clock)
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
        return _ManagedLease(r, Target(r.base_url, r.name, self._headers), self.clock.monotonic() - t0)

    def replicas_besides(self, names: Collection[str]) -> int:
        return int(self.replica.name not in names)

    def ready_targets(self) -> list[Target]:
        r = self.replica
        return [Target(r.base_url, r.name, self._headers)] if r.state == "ready" else []

    async def start(self) -> None:
        self.replica.start_owner()
        if self.config.lifecycle.prewarm:
            self._prewarm_task = asyncio.get_running_loop().create_task(self._prewarm_loop())

    async def stop(self) -> None:
        for task in (self._prewarm_task, *self._background):
            if task is not None:
                task.cancel()
        await self.replica.shutdown()

    # -- admin -------------------------------------------------------------------------------------

    async def wake(self, reason: str = "admin", wait: bool = False) -> None:
        if wait:
            await self.replica.ensure_ready(reason)
        else:
            self._spawn(self.replica.ensure_ready(reason))

    async def sleep(self, reason: str = "admin", stop: bool = False) -> str:
        if stop:
            return await self.replica.request_stop(reason)
        return await self.replica.request_sleep(reason)

    def describe(self) -> dict[str, Any]:
        r = self.replica
        return {
            "name": self.name,
            "model": self.config.model,
            "managed": True,
            "queue_length": self.waiting,
            "eta_s": round(self.eta_s(), 3) if r.state != "ready" else 0.0,
            "device": self.device.name if self.device else None,
            "replicas": [r.describe()],
        }

    def view(self, now: float, telemetry: PoolTelemetry | None = None) -> PoolView:
        """The replica's state, its measured start and wake times, and what a request arriving now waits."""
        r = self.replica
        lc = self.config.lifecycle
        start_s = mean_or(r.recent_starts["start"], min(self.config.backend.startup_timeout_s, 30.0))
        wake_s = mean_or(r.recent_starts["wake"], DEFAULT_WAKE_S[lc.sleep_level])
        elapsed = now - r.since
        state: PoolState
        if r.state == "ready":
            state, eta = "ready", 0.0
        elif r.state == "starting":
            # A wake keeps the running process's URL; a start learns it only once the process is up.
            state = "waking" if r.base_url else "starting"
            eta = max(0.0, (wake_s if r.base_url else start_s) - elapsed)
        elif r.state == "stopping":  # on its way down: a request waits for that, then brings it back
            can_sleep = r.provisioner.can_sleep
            state, eta = ("sleeping", wake_s) if can_sleep else ("stopped", start_s)
        elif r.state == "failed":
            backoff = restart_delay(r.failures, lc.restart_backoff_s, lc.restart_backoff_max_s)
            state, eta = "failed", start_s + max(0.0, backoff - elapsed)
        elif r.state == "sleeping":
            state, eta = "sleeping", wake_s
        else:
            state, eta = "stopped", start_s
        return pool_view(
            self.config,
            state=state,
            replicas=1,
            ready_replicas=1 if state == "ready" else 0,
            in_flight=r.in_flight,
            held=self.waiting,
            eta_s=eta,
            start_s=start_s,
            wake_s=wake_s,
            telemetry=telemetry,
        )

    # -- internals ---------------------------------------------------------------------------------

    def eta_s(self) -> float:
        r = self.replica
        kind = "wake" if r.state == "sleeping" else "start"
        elapsed = self.clock.monotonic() - r.since if r.state == "starting" else None
        default = min(self.config.backend.startup_timeout_s, 30.0)
        return start_eta(elapsed, list(r.recent_starts[kind]), default)

    def _unavailable(self, message: str) -> ServiceUnavailable:
        retry = max(1, math.ceil(self.eta_s()))
        return ServiceUnavailable(f"{message} Retry in about {retry}s.", headers={"Retry-After": str(retry)})

    def _spawn(self, work: Any) -> None:
        async def quiet() -> None:
            with contextlib.suppress(APIError):
                await work

        task = asyncio.get_running_loop().create_task(quiet())
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
                self._spawn(self.replica.ensure_ready("prewarm"))


def build_managed_pools(
    config: Config, clock: Clock, events: EventSink, metrics: LifecycleMetrics
) -> dict[str, ManagedPool]:
    """A :class:`ManagedPool` for every pool with ``backend.command``, sharing one ledger per device."""
    devices = {d.name: Device(d.name, d.memory_gb, clock) for d in config.devices}
    pools: dict[str, ManagedPool] = {}
    for p in config.pools:
        if p.backend.command is None:
            continue
        device = devices.get(p.gpu.device) if p.gpu.device else None
        provisioner = CommandProvisioner(p, f"{p.name}-0", clock)
        pools[p.name] = ManagedPool(p, provisioner, clock, events, metrics, device)
    return pools
