"""Prometheus metrics of one gateway, in a registry of its own (no process-global collectors).

Later parts (lifecycle, budgets, accounting) add their metrics to the same registry through
:attr:`GatewayMetrics.registry`, so that one ``/metrics`` shows them all.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFB_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "frugalserve_requests",
            "Requests answered, by pool, endpoint and HTTP status.",
            ["pool", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "frugalserve_request_duration_seconds",
            "Time from request received to the last byte sent, by pool.",
            ["pool", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "frugalserve_time_to_first_byte_seconds",
            "Time from request received to the first response byte sent, by pool.",
            ["pool", "endpoint"],
            buckets=TTFB_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge(
            "frugalserve_requests_in_flight", "Requests being served, by pool.", ["pool"], registry=r
        )
        self.upstream_errors = Counter(
            "frugalserve_upstream_errors",
            "Failures talking to a backend, by pool and kind (connect, timeout, broken, status, invalid).",
            ["pool", "kind"],
            registry=r,
        )
        self.tokens = Counter(
            "frugalserve_tokens",
            "Tokens reported by backends, by pool and kind (prompt, completion).",
            ["pool", "kind"],
            registry=r,
        )
        self.counted_tokens = Counter(
            "frugalserve_counted_prompt_tokens",
            "Prompt tokens counted by the gateway before dispatch, by pool and kind (text, image, video).",
            ["pool", "kind"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "frugalserve_image_tokens_saved",
            "Image tokens saved by resizing to the pool's budget and dropping duplicate images.",
            ["pool"],
            registry=r,
        )
        self.max_tokens_clamped = Counter(
            "frugalserve_max_tokens_clamped",
            "Requests whose max_tokens was lowered to the pool's limits.max_new_tokens.",
            ["pool"],
            registry=r,
        )
        self.client_disconnects = Counter(
            "frugalserve_client_disconnects",
            "Requests whose client went away before the response ended; the upstream request was cancelled.",
            ["pool"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
