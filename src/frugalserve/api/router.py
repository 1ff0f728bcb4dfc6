"""The routing stage of the request path: the effects around the pure :func:`frugalserve.routing.policy.decide`.

It owns what routing remembers (the session store), builds each decision's snapshot from the live pools,
and counts decisions in /metrics. ``model: "auto"`` requests are counted with the tiers' shared image and
fetch limits (:meth:`Router.counting`) before the pool is known; config validation makes sure the tiers
agree on them, so the counts the router decides on are the counts the chosen pool is billed for.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from prometheus_client import CollectorRegistry, Counter

from frugalserve.accounting.keys import ApiKey
from frugalserve.api.admission import Counting
from frugalserve.budget.limits import LimitsConfig
from frugalserve.clock import Clock
from frugalserve.config import Config
from frugalserve.errors import InvalidRequest
from frugalserve.metrics.upstream import UpstreamTelemetry
from frugalserve.pools import Pool, PoolSet
from frugalserve.routing import retry
from frugalserve.routing.features import PRIORITY_HEADER, SESSION_HEADER, TIER_HEADER, Features
from frugalserve.routing.policy import Route, decide, pin
from frugalserve.routing.sessions import SessionStore
from frugalserve.routing.snapshot import PoolsSnapshot

ROUTE_HEADER = "x-frugalserve-route"
_ROUTING_HEADERS = (TIER_HEADER, PRIORITY_HEADER, SESSION_HEADER)


def routing_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The request headers routing reads (small, so they travel to a body worker)."""
    return {h: headers[h] for h in _ROUTING_HEADERS if h in headers}


class Router:
    def __init__(
        self,
        config: Config,
        pools: PoolSet,
        clock: Clock,
        registry: CollectorRegistry,
        telemetry: UpstreamTelemetry | None = None,
    ) -> None:
        self.config = config.routing
        self.clock = clock
        # The replicas' own /metrics, read from the last scrape round into each snapshot (no I/O here).
        self.telemetry = telemetry if telemetry is not None and telemetry.enabled else None
        self.tiered: list[Pool] = [p for p in pools if p.config.tier is not None]
        self._pinned: dict[str, Route] = {}
        self.sessions = SessionStore(self.config.sessions.ttl_s, self.config.sessions.max_entries)
        reference = self.tiered[0].config.limits if self.tiered else LimitsConfig()
        # Counting for auto: the shared image and fetch limits, and no caps (the chosen pool's come after).
        self._limits = LimitsConfig(image=reference.image, fetch=reference.fetch)
        self.fetch_pool = self.tiered[0].name if self.tiered else None
        self.decisions = Counter(
            "frugalserve_routing_decisions",
            "Routing decisions by the tier that served, why (bounded vocabulary), and what the router did.",
            ["tier", "reason", "action"],
            registry=registry,
        )

    def counting(self, headers: Mapping[str, str]) -> Counting:
        """How an ``auto`` request is counted: the tiers' limits, and its routing headers for the features."""
        if not self.tiered:
            raise InvalidRequest(
                "model 'auto' needs pools with a tier on this gateway (pools[].tier); none has one",
                param="model",
                code="no_tier",
            )
        return Counting(self._limits, True, routing_headers(headers))

    def route(self, features: Features, key: ApiKey | None, stream: bool) -> Route:
        """Decide the pool for an ``auto`` request; a conversation remembers the tier it wanted."""
        now = self.clock.monotonic()
        snapshot = self._snapshot(key, now)
        allowed = key.tiers if key is not None else None
        if self.config.cascade.enabled and not stream and features.tier_hint is None:
            route = retry.cascade_start(features, snapshot, self.config, allowed)
        else:
            session = f"{key.id if key is not None else '-'}:{features.session}" if features.session else None
            route = decide(features, snapshot, self.config, allowed, session_tier=self.sessions.tier(session, now))
            self.sessions.remember(session, route.wanted, now, self.config.tiers)
        self.count(route)
        return route

    def fallback(self, features: Features, key: ApiKey | None, failed: Collection[str]) -> Route | None:
        """Where an ``auto`` request goes after ``failed`` pools could not answer; None: nowhere."""
        now = self.clock.monotonic()
        allowed = key.tiers if key is not None else None
        route = retry.fallback(features, self._snapshot(key, now), self.config, failed, allowed)
        if route is not None:
            self.count(route)
        return route

    def escalate(self, features: Features, key: ApiKey | None, above: str) -> Route | None:
        """The cascade's next tier after a flagged answer from tier ``above``; None: the answer stands."""
        now = self.clock.monotonic()
        allowed = key.tiers if key is not None else None
        route = retry.escalate(features, self._snapshot(key, now), self.config, above, allowed)
        if route is not None:
            self.count(route)
        return route

    def _snapshot(self, key: ApiKey | None, now: float) -> PoolsSnapshot:
        pools = self.tiered if key is None or key.models is None else [p for p in self.tiered if _allowed(key, p)]
        t = self.telemetry
        if t is None:
            return PoolsSnapshot(now, tuple(p.view(now) for p in pools))
        return PoolsSnapshot(now, tuple(p.view(now, t.pool(p.name, now)) for p in pools))

    def pinned(self, pool: Pool) -> Route:
        """The route of a request that named its model, explained the same way (the same for every request
        to that pool: built once, not from a snapshot per request)."""
        route = self._pinned.get(pool.name)
        if route is None:
            route = self._pinned[pool.name] = pin(pool.view(self.clock.monotonic()))
        self.count(route)
        return route

    def count(self, route: Route) -> None:
        self.decisions.labels(route.tier, route.reason, route.action).inc()


def _allowed(key: ApiKey, pool: Pool) -> bool:
    c = pool.config
    return any(key.allows(name) for name in (c.name, c.model, *c.aliases))
