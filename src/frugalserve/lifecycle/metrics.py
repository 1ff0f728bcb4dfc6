"""Lifecycle metrics, registered on the gateway's own registry (no process-global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from frugalserve.clock import SystemClock
from frugalserve.metrics.cost import CostMeter

COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class LifecycleMetrics:
    """``meter``: the replicas' billed clocks, which also give the replicas-by-state gauge (one per gateway)."""

    def __init__(self, registry: CollectorRegistry, meter: CostMeter | None = None) -> None:
        self.meter = meter or CostMeter(SystemClock())
        registry.register(self.meter)
        self.cold_starts = Counter(
            "frugalserve_cold_starts",
            "Replicas made ready from cold, by pool, kind (start: from stopped or failed; wake: from sleep) and "
            "level (0 for a start; the sleep level woken from).",
            ["pool", "kind", "level"],
            registry=registry,
        )
        self.cold_start_seconds = Histogram(
            "frugalserve_cold_start_seconds",
            "Time from a replica leaving stopped/sleeping to ready, by pool, kind and level.",
            ["pool", "kind", "level"],
            buckets=COLD_START_BUCKETS,
            registry=registry,
        )
        self.transitions = Counter(
            "frugalserve_replica_transitions",
            "Replica state transitions, by pool, target state and reason.",
            ["pool", "to", "reason"],
            registry=registry,
        )
        self.queued = Gauge(
            "frugalserve_requests_held",
            "Requests held while the pool starts or wakes, by pool.",
            ["pool"],
            registry=registry,
        )
        self.held_rejected = Counter(
            "frugalserve_pool_rejected",
            "Requests answered 503 while waiting for a replica, by pool and reason (queue_full, timeout, failed).",
            ["pool", "reason"],
            registry=registry,
        )
        self.prewarms = Counter(
            "frugalserve_prewarms",
            "Replicas brought up ahead of demand, by pool, kind (cron, predictive) and outcome: used (it served a "
            "request) or expired (it went down without one).",
            ["pool", "kind", "outcome"],
            registry=registry,
        )
        self.scale_decisions = Counter(
            "frugalserve_autoscale_decisions",
            "Autoscaler decisions that changed the replica count or were refused, by pool, action (scale_up, "
            "scale_down, refused, prewarm) and the signal that decided.",
            ["pool", "action", "signal"],
            registry=registry,
        )
        self.desired_replicas = Gauge(
            "frugalserve_autoscale_desired_replicas",
            "Replicas the pool's autoscaler wants now.",
            ["pool"],
            registry=registry,
        )
        self.scale_load = Gauge(
            "frugalserve_autoscale_load",
            "The pool's load in replicas' worth of target, averaged over the window the last decision used.",
            ["pool"],
            registry=registry,
        )
        self.panic = Gauge(
            "frugalserve_autoscale_panic",
            "1 while the pool's autoscaler is in panic mode (a burst: decides on the short window, never scales down).",
            ["pool"],
            registry=registry,
        )
