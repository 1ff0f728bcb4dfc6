"""Pools: the named groups of backends a request can be sent to, and how a request gets one.

A request asks its pool for a :class:`Lease` and holds it until its response has ended; the pool
counts leases as work in flight. :class:`StaticPool` is a backend someone else runs at a fixed URL.
Managed pools (processes the gateway starts, sleeps and stops) implement the same ``acquire``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from frugalserve.config import PoolConfig
from frugalserve.errors import Conflict, NotFound
from frugalserve.routing.snapshot import DEFAULT_START_S, DEFAULT_WAKE_S, PoolView, pool_view


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

    async def acquire(self) -> Lease: ...

    def is_ready(self) -> bool:
        """True when acquire() would not wait (a cold pool makes streaming clients wait with keep-alives)."""
        ...

    def describe(self) -> dict[str, Any]:
        """State for GET /admin/pools."""
        ...

    def view(self, now: float) -> PoolView:
        """The pool's live state for routing (frugalserve.routing.snapshot)."""
        ...

    async def wake(self, reason: str = "admin", wait: bool = False) -> None: ...

    async def sleep(self, reason: str = "admin", stop: bool = False) -> str: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class _StaticLease:
    __slots__ = ("_pool", "target", "waited_s")

    def __init__(self, pool: StaticPool) -> None:
        self._pool: StaticPool | None = pool
        self.target = pool.target
        self.waited_s = 0.0

    def release(self) -> None:
        if self._pool is not None:
            self._pool.in_flight -= 1
            self._pool = None


class StaticPool:
    """A backend at a fixed URL that someone else runs; always considered ready."""

    def __init__(self, config: PoolConfig) -> None:
        assert config.backend.url is not None
        self.name = config.name
        self.config = config
        self.target = Target(config.backend.url.rstrip("/"), f"{config.name}-0", dict(config.backend.headers))
        self.in_flight = 0

    async def acquire(self) -> Lease:
        self.in_flight += 1
        return _StaticLease(self)

    def is_ready(self) -> bool:
        return True

    def view(self, now: float) -> PoolView:
        # Someone else runs it: always up, never started or woken by us.
        return pool_view(
            self.config,
            state="external",
            replicas=1,
            ready_replicas=1,
            in_flight=self.in_flight,
            held=0,
            eta_s=0.0,
            start_s=DEFAULT_START_S,
            wake_s=DEFAULT_WAKE_S[1],
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.config.model,
            "managed": False,
            "queue_length": 0,
            "replicas": [{"name": self.target.replica, "state": "external", "in_flight": self.in_flight}],
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
