"""Pools: the named groups of backends a request can be sent to, and how a request gets one.

A request asks its pool for a :class:`Lease` and holds it until its response has ended; the pool
counts leases as work in flight. :class:`StaticPool` is a backend someone else runs at a fixed URL.
Managed pools (processes the gateway starts, sleeps and stops) implement the same ``acquire``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from frugalserve.clock import SystemClock
from frugalserve.config import PoolConfig
from frugalserve.errors import Conflict, NotFound
from frugalserve.metrics.cost import BilledClock, CostMeter
from frugalserve.routing.config import AffinityConfig
from frugalserve.routing.replicas import HashRing, ReplicaLoad, choose_replica
from frugalserve.routing.snapshot import DEFAULT_START_S, DEFAULT_WAKE_S, PoolView, pool_view

if TYPE_CHECKING:  # metrics.upstream imports this module's Target
    from frugalserve.metrics.upstream import PoolTelemetry


@dataclass(frozen=True, slots=True)
class Target:
    """Where one request goes: a backend's base URL (without /v1) and the headers it needs."""

    base_url: str
    replica: str
    headers: Mapping[str, str] = field(default_factory=dict)


class Lease(Protocol):
    target: Target
    # Seconds the request waited for a replica to become ready (0 when one was warm).
    waited_s: float

    def release(self) -> None:
        """End the request's hold on the replica; idempotent."""
        ...


class Pool(Protocol):
    name: str
    config: PoolConfig

    async def acquire(self, affinity: str | None = None, exclude: Collection[str] = ()) -> Lease:
        """A lease on a ready replica (waiting while the pool starts or wakes). ``affinity``: a key whose
        requests should share a replica (consistent hashing with bounded load); ``exclude``: replicas to
        avoid (one just failed), when there is another."""
        ...

    def replicas_besides(self, names: Collection[str]) -> int:
        """How many replicas a retry that avoids ``names`` could go to (0: retry elsewhere)."""
        ...

    def is_ready(self) -> bool:
        """True when acquire() would not wait (a cold pool makes streaming clients wait with keep-alives)."""
        ...

    def ready_targets(self) -> list[Target]:
        """The replicas serving now, each once: what upstream telemetry scrapes (frugalserve.metrics.upstream)."""
        ...

    def describe(self) -> dict[str, Any]:
        """State for GET /admin/pools."""
        ...

    def view(self, now: float, telemetry: PoolTelemetry | None = None) -> PoolView:
        """The pool's live state for routing (frugalserve.routing.snapshot), with what its replicas' own
        /metrics said (``telemetry``, kept by frugalserve.metrics.upstream) when the caller has it."""
        ...

    async def wake(self, reason: str = "admin", wait: bool = False) -> None: ...

    async def sleep(self, reason: str = "admin", stop: bool = False) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _StaticLease:
    __slots__ = ("_index", "_pool", "target", "waited_s")

    def __init__(self, pool: StaticPool, index: int) -> None:
        self._pool: StaticPool | None = pool
        self._index = index
        self.target = pool.targets[index]
        self.waited_s = 0.0

    def release(self) -> None:
        pool = self._pool
        if pool is not None:
            pool.outstanding[self._index] -= 1
            if not pool.outstanding[self._index]:
                pool.billed[self._index].busy(False)
            self._pool = None


class StaticPool:
    """Servers at fixed URLs that someone else runs (``backend.url``, or several of the same model in
    ``backend.urls``, each a replica); always considered ready. A request goes to the replica with the
    fewest outstanding requests or, with an affinity key (its first image, its conversation), to the one
    that key hashes to while that replica is not loaded past ``routing.affinity.load_factor`` times the
    mean (consistent hashing with bounded load), so the servers' prefix and vision caches hit."""

    def __init__(
        self, config: PoolConfig, affinity: AffinityConfig | None = None, meter: CostMeter | None = None
    ) -> None:
        urls = config.backend.static_urls
        assert urls, "a static pool needs backend.url or backend.urls"
        self.name = config.name
        self.config = config
        headers = dict(config.backend.headers)
        self.targets = [Target(u.rstrip("/"), f"{config.name}-{i}", headers) for i, u in enumerate(urls)]
        self.outstanding = [0] * len(urls)
        meter = meter or CostMeter(SystemClock())
        self.billed = [BilledClock(meter.clock, config, "external") for _ in urls]  # /metrics' cost series
        for billed in self.billed:
            meter.add(config, billed)
        self._index = {t.replica: i for i, t in enumerate(self.targets)}
        affinity = affinity or AffinityConfig()
        self._load_factor = affinity.load_factor
        self._ring = HashRing([t.replica for t in self.targets], affinity.virtual_nodes) if len(urls) > 1 else None

    @property
    def in_flight(self) -> int:
        return sum(self.outstanding)

    async def acquire(self, affinity: str | None = None, exclude: Collection[str] = ()) -> Lease:
        if self._ring is None:
            index = 0
        else:
            loads = [ReplicaLoad(t.replica, n) for t, n in zip(self.targets, self.outstanding, strict=True)]
            if exclude:
                loads = [r for r in loads if r.name not in exclude] or loads
            index = self._index[choose_replica(loads, affinity, self._ring, self._load_factor)]
        self.outstanding[index] += 1
        if self.outstanding[index] == 1:
            self.billed[index].busy(True)
        return _StaticLease(self, index)

    def replicas_besides(self, names: Collection[str]) -> int:
        return sum(t.replica not in names for t in self.targets)

    def is_ready(self) -> bool:
        return True

    def ready_targets(self) -> list[Target]:
        return self.targets

    def view(self, now: float, telemetry: PoolTelemetry | None = None) -> PoolView:
        # Someone else runs it: always up, never started or woken by us.
        n = len(self.targets)
        return pool_view(
            self.config,
            state="external",
            replicas=n,
            ready_replicas=n,
            in_flight=self.in_flight,
            held=0,
            eta_s=0.0,
            start_s=DEFAULT_START_S,
            wake_s=DEFAULT_WAKE_S[1],
            telemetry=telemetry,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.config.model,
            "managed": False,
            "queue_length": 0,
            "replicas": [
                {"name": t.replica, "state": "external", "in_flight": n, "last_start": None, "last_wake": None}
                for t, n in zip(self.targets, self.outstanding, strict=True)
            ],
        }

    async def wake(self, reason: str = "admin", wait: bool = False) -> None:
        raise Conflict(f"pool {self.name!r} is an external server; it cannot be woken.", code="not_managed")

    async def sleep(self, reason: str = "admin", stop: bool = False) -> str:
        raise Conflict(f"pool {self.name!r} is an external server; it cannot sleep.", code="not_managed")

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass


class PoolSet:
    """Every pool of a gateway, found by pool name, model name or alias."""

    def __init__(self, pools: Iterable[Pool]) -> None:
        self.pools: dict[str, Pool] = {}
        self._by_model: dict[str, Pool] = {}
        for pool in pools:
            self.pools[pool.name] = pool
            for name in (pool.name, pool.config.model, *pool.config.aliases):
                self._by_model[name] = pool

    def resolve(self, model: str) -> Pool:
        pool = self._by_model.get(model)
        if pool is None:
            known = ", ".join(sorted(self._by_model)) or "none configured"
            raise NotFound(
                f"The model {model!r} does not exist on this gateway (known: {known}).",
                param="model",
                code="model_not_found",
            )
        return pool

    def __iter__(self) -> Iterator[Pool]:
        return iter(self.pools.values())
