"""Prometheus metrics of one gateway, in a registry of its own (no process-global collectors).

This module holds the request path's instruments; the other owners add theirs to the same registry
(:attr:`GatewayMetrics.registry`) so that one ``/metrics`` shows them all: lifecycle (replicas, cold
starts), :mod:`.cost` (dollars), :mod:`.pools` (utilisation, objectives), :mod:`.budgets`, the usage
writer, the router, :mod:`.upstream` (the backends' own metrics) and :mod:`.gpu` (NVML).
The catalogue, with every name and label, is docs/observability.md.
"""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from frugalserve.metrics.exposition import ExpositionWriter

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5)


class GatewayMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # No <name>_created series beside every counter and histogram: Prometheus stores them as gauges of
        # their own, doubling what a scrape carries for nothing a dashboard uses. (A switch of the client
        # library, for the whole process: a gateway process serves one registry.)
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        self.writer = ExpositionWriter()
        r = self.registry
        self.requests = Counter(
            "frugalserve_requests",
            "Requests answered, by pool, tier, endpoint and HTTP status.",
            ["pool", "tier", "endpoint", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "frugalserve_request_duration_seconds",
            "Time from request received to the last byte sent, by pool and tier.",
            ["pool", "tier", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "frugalserve_time_to_first_token_seconds",
            "Time from request received to the first byte of the answer relayed (a stream's first token), "
            "by pool and tier.",
            ["pool", "tier", "endpoint"],
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "frugalserve_inter_token_latency_seconds",
            "Mean time between generated tokens of a streamed answer (one observation per request), by pool and tier.",
            ["pool", "tier"],
            buckets=ITL_BUCKETS,
            registry=r,
        )
        self.generation_tokens = Counter(
            "frugalserve_generation_tokens",
            "Completion tokens the backends reported, by pool and tier.",
            ["pool", "tier"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "frugalserve_prompt_tokens",
            "Prompt tokens of answered requests by kind: text, image, video (the gateway's exact count), or "
            "uncounted (the backend's usage, for pools with tokenizer none).",
            ["pool", "tier", "kind"],
            registry=r,
        )
        self.tokens_saved = Counter(
            "frugalserve_image_tokens_saved",
            "Image tokens saved by resizing to the pool's budget and dropping duplicate images.",
            ["pool", "tier"],
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
        """The text exposition (what ``generate_latest`` prints, at a third of its cost: .exposition)."""
        return self.writer.render(self.registry)

    async def render_off_loop(self) -> bytes:
        """:meth:`render` for GET /metrics: the samples are collected on the event loop, since collectors read
        state the loop owns (dicts it may change while a thread iterates them), and written to text in a
        thread, so the loop only stalls for the collection."""
        families = list(self.registry.collect())
        return await asyncio.to_thread(self.writer.write, families)
