"""Each pool's load against its objectives, read from the pools' own views at scrape time.

Utilisation is the routing's own measure (requests in flight / (capacity x ready replicas), as in
:class:`~frugalserve.routing.snapshot.PoolView`), so an alert on it speaks of what the router acts on. The
band and the time-to-first-token objective come from ``routing.tiers`` (``per_tier``); a pool without a tier
has no band here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from frugalserve.clock import Clock
from frugalserve.config import Config
from frugalserve.metrics.collector import ScrapeCollector
from frugalserve.pools import Pool


class PoolsCollector(ScrapeCollector):
    def __init__(self, config: Config, pools: Iterable[Pool], clock: Clock) -> None:
        self.config = config
        self.pools = list(pools)
        self.clock = clock

    def families(self, collecting: bool) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "frugalserve_pool_utilization_ratio",
            "Requests in flight / (capacity x ready replicas), by pool; absent while no replica is ready.",
            labels=["pool"],
        )
        band = GaugeMetricFamily(
            "frugalserve_pool_utilization_target_ratio",
            "The pool's tier's utilisation band (routing.per_tier[].utilisation), by pool and bound.",
            labels=["pool", "bound"],
        )
        info = GaugeMetricFamily(
            "frugalserve_pool_info",
            "One series per pool (value 1) naming its tier, model, GPU type and billing, for joins.",
            labels=["pool", "tier", "model", "gpu_type", "billing"],
        )
        objective = GaugeMetricFamily(
            "frugalserve_tier_ttft_objective_seconds",
            "The tier's P95 time-to-first-token objective (routing.per_tier[].slo_ms), by tier.",
            labels=["tier"],
        )
        if collecting:
            routing = self.config.routing
            now = self.clock.monotonic()
            for pool in self.pools:
                c = pool.config
                view = pool.view(now)
                if view.ready_replicas:
                    util.add_metric([pool.name], view.in_flight / (view.capacity * view.ready_replicas))
                info.add_metric([pool.name, c.tier or "-", c.model, c.gpu.type, c.gpu.billing], 1)
                if c.tier is not None:
                    low, high = routing.objective(c.tier).utilisation
                    band.add_metric([pool.name, "low"], low)
                    band.add_metric([pool.name, "high"], high)
            if any(p.config.tier is not None for p in self.pools):
                for tier in routing.tiers:
                    objective.add_metric([tier], routing.objective(tier).slo_ms / 1000)
        yield from (util, band, info, objective)
