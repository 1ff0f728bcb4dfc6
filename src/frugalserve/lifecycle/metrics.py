"""Lifecycle metrics, registered on the gateway's own registry (no process-global collectors)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

STATES = ("stopped", "starting", "ready", "sleeping", "stopping", "failed")
COLD_START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)


class LifecycleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cold_starts = Counter(
            "frugalserve_cold_starts",
            "Replicas made ready from cold, by pool and kind (start: from stopped or failed; wake: from sleep).",
            ["pool", "kind"],
            registry=registry,
        )
        self.cold_start_seconds = Histogram(
            "frugalserve_cold_start_seconds",
            "Time from a replica leaving stopped/sleeping to ready, by pool and kind.",
            ["pool", "kind"],
            buckets=COLD_START_BUCKETS,
            registry=registry,
        )
        self.replicas = Gauge(
            "frugalserve_replicas", "Replicas by pool and state.", ["pool", "state"], registry=registry
        )
        self.transitions = Counter(
            "frugalserve_replica_transitions",
            "Replica state transitions, by pool, target state and reason.",
            ["pool", "to", "reason"],
            registry=registry,
        )
        self.queued = Gauge(
            "frugalserve_pool_queue_length", "Requests held for a replica, by pool.", ["pool"], registry=registry
        )
        self.held_rejected = Counter(
            "frugalserve_pool_rejected",
            "Requests answered 503 while waiting for a replica, by pool and reason (queue_full, timeout, failed).",
            ["pool", "reason"],
            registry=registry,
        )

    def set_state(self, pool: str, state: str) -> None:
        for s in STATES:
            self.replicas.labels(pool, s).set(1 if s == state else 0)
