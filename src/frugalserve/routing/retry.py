"""Second choices: where an ``auto`` request goes when its pool failed before answering, or when its answer
was flagged by the cascade. Pure functions over the same snapshot as :func:`~frugalserve.routing.policy.decide`.

- :func:`fallback`: the pool could not be reached or timed out before its first byte. The request is decided
  again without the pools that failed, so it takes the next eligible tier by the same rules (warmth, load,
  cost); reason ``fallback``. Never after a streamed byte: the gateway only asks before any answer began.
- :func:`cascade_start`: with the cascade on, a non-streaming request first tries the cheapest tier that
  serves it fully (reason ``cascade``).
- :func:`escalate`: the answer was flagged (:mod:`frugalserve.routing.cascade`): the next bigger eligible
  tier tries; reason ``cascade``. None when no bigger tier is left: the flagged answer stands.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from frugalserve.errors import APIError
from frugalserve.routing.config import RoutingConfig
from frugalserve.routing.features import Features
from frugalserve.routing.policy import Route, decide
from frugalserve.routing.snapshot import PoolsSnapshot


def fallback(
    features: Features,
    snapshot: PoolsSnapshot,
    cfg: RoutingConfig,
    failed: Collection[str],
    allowed_tiers: tuple[str, ...] | None = None,
) -> Route | None:
    """The route without the ``failed`` pools; None when no other pool can serve the request."""
    rest = PoolsSnapshot(snapshot.now, tuple(v for v in snapshot.pools if v.name not in failed))
    try:
        route = decide(features, rest, cfg, allowed_tiers)
    except APIError:
        return None
    return _relabel(route, "fallback")


def cascade_start(
    features: Features, snapshot: PoolsSnapshot, cfg: RoutingConfig, allowed_tiers: tuple[str, ...] | None = None
) -> Route:
    """The cheapest tier that serves the request (fit moves it up where the smallest cannot)."""
    tiers = [t for t in cfg.tiers if allowed_tiers is None or t in allowed_tiers]
    cheapest = dataclasses.replace(features, tier_hint=tiers[0] if tiers else None)
    return _relabel(decide(cheapest, snapshot, cfg, allowed_tiers), "cascade")


def escalate(
    features: Features,
    snapshot: PoolsSnapshot,
    cfg: RoutingConfig,
    above: str,
    allowed_tiers: tuple[str, ...] | None = None,
) -> Route | None:
    """The next eligible tier above ``above``; None when there is none."""
    rank = cfg.rank(above)
    bigger = [t for t in cfg.tiers[rank + 1 :] if allowed_tiers is None or t in allowed_tiers]
    if not bigger:
        return None
    rest = PoolsSnapshot(snapshot.now, tuple(v for v in snapshot.pools if v.tier in bigger))
    try:
        route = decide(dataclasses.replace(features, tier_hint=bigger[0]), rest, cfg, tuple(bigger))
    except APIError:
        return None
    return _relabel(route, "cascade")


def _relabel(route: Route, reason: str) -> Route:
    detail = route.detail.replace(f"reason={route.reason}", f"reason={reason}", 1)
    action = "direct" if route.action == "hinted" else route.action
    detail = detail.replace("action=hinted", f"action={action}", 1)
    return dataclasses.replace(route, reason=reason, action=action, detail=detail)
