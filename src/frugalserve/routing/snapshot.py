"""The live state routing decides on: one :class:`PoolView` per pool, taken at one moment.

Each pool builds its own view (``pool.view(now)``, by its owner's rules); the router and the planner only
read views, never live objects. The objective of each tier (``slo_ms``, utilisation band, spill rule)
is policy, not state: it lives in :class:`~frugalserve.routing.config.RoutingConfig`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:  # frugalserve.config imports routing.config; keep this module free of that cycle
    from frugalserve.config import PoolConfig
    from frugalserve.metrics.upstream import PoolTelemetry

PoolState = Literal["ready", "starting", "waking", "sleeping", "stopped", "failed", "external"]
WARM: frozenset[str] = frozenset(("ready", "external"))  # serve without waiting for a start
COMING: frozenset[str] = frozenset(("starting", "waking"))  # someone already pays for the start
COLD: frozenset[str] = frozenset(("sleeping", "stopped", "failed"))  # a request here starts or wakes it

# Used until a pool has measured its own: a start of a vLLM server with a mid-size model, and vLLM's
# published wake times (level 1: weights back from CPU memory, 0.1-0.8 s; level 2: reloaded, 0.8-2.6 s).
DEFAULT_START_S = 30.0
DEFAULT_WAKE_S = {1: 1.0, 2: 3.0}


@dataclass(frozen=True, slots=True)
class PoolView:
    """One pool at one moment. Times in seconds; ``eta_s`` is what a request arriving now waits for a
    replica (0 when one is ready; the measured start or wake time, less what has passed, otherwise)."""

    name: str
    tier: str | None
    usd_per_hour: float  # gpu.usd_per_hour x gpu.count, per replica
    reserved: bool  # billed whether up or not: waking it costs nothing more
    context_tokens: int | None  # limits.max_context_tokens (prompt + answer)
    max_new_tokens: int | None  # limits.max_new_tokens
    clamps: bool  # a max_tokens above max_new_tokens is lowered (else the backend path answers 400)
    max_images: int | None  # limits.image.max_count
    max_visual_tokens: int | None
    modalities: frozenset[str]
    state: PoolState
    replicas: int
    ready_replicas: int
    in_flight: int
    held: int  # requests waiting in the pool for a replica
    capacity: int  # requests one replica serves at once
    eta_s: float
    start_s: float  # measured mean (or default) of a cold start
    wake_s: float  # measured mean (or default) of a wake from sleep
    min_warm_s: float
    linger_s: float | None  # idle seconds before it sleeps or stops after its last request; None: never
    # What the replicas' own /metrics said at the last scrape (running, waiting, KV cache); None: not scraped.
    telemetry: PoolTelemetry | None = None

    @property
    def warm(self) -> bool:
        return self.state in WARM

    def slots(self) -> int:
        """Requests served at once when every replica is up (at least one replica's worth)."""
        return self.capacity * max(self.ready_replicas if self.warm else self.replicas, 1)


@dataclass(frozen=True, slots=True)
class PoolsSnapshot:
    now: float
    pools: tuple[PoolView, ...]

    def get(self, name: str) -> PoolView | None:
        for view in self.pools:
            if view.name == name:
                return view
        return None


def pool_view(
    config: PoolConfig,
    *,
    state: PoolState,
    replicas: int,
    ready_replicas: int,
    in_flight: int,
    held: int,
    eta_s: float,
    start_s: float,
    wake_s: float,
    telemetry: PoolTelemetry | None = None,
) -> PoolView:
    """A view whose static half (price, caps, modalities, tier) comes from the pool's config."""
    lim = config.limits
    lc = config.lifecycle
    idle = [s for s in (lc.idle_sleep_s, lc.idle_stop_s) if s is not None]
    return PoolView(
        name=config.name,
        tier=config.tier,
        usd_per_hour=config.gpu.usd_per_hour * config.gpu.count,
        reserved=config.gpu.billing == "reserved",
        context_tokens=lim.max_context_tokens,
        max_new_tokens=lim.max_new_tokens,
        clamps=lim.max_tokens_policy == "clamp",
        max_images=lim.image.max_count,
        max_visual_tokens=lim.max_visual_tokens,
        modalities=frozenset(config.modalities),
        state=state,
        replicas=replicas,
        ready_replicas=ready_replicas,
        in_flight=in_flight,
        held=held,
        capacity=config.capacity,
        eta_s=eta_s,
        start_s=start_s,
        wake_s=wake_s,
        min_warm_s=lc.min_warm_s,
        linger_s=min(idle) if idle else None,
        telemetry=telemetry,
    )


def idle_snapshot(pools: Iterable[PoolConfig], now: float = 0.0) -> PoolsSnapshot:
    """Every pool up with nothing in flight: the routing of a request on its own merits (score and fit
    only), for evaluating the score on a labelled set and for the planner's first pass."""
    views = tuple(
        pool_view(
            p,
            state="ready",
            replicas=1,
            ready_replicas=1,
            in_flight=0,
            held=0,
            eta_s=0.0,
            start_s=DEFAULT_START_S,
            wake_s=DEFAULT_WAKE_S[p.lifecycle.sleep_level],
        )
        for p in pools
    )
    return PoolsSnapshot(now, views)


def mean_or(values: Sequence[float], default: float) -> float:
    return sum(values) / len(values) if values else default
