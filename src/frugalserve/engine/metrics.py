"""The engine's Prometheus metrics, under vLLM's names where they mean the same thing.

One :class:`EngineMetrics` per app, on its own registry (no process-global collectors), so dashboards and
the gateway read this engine exactly like vLLM.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class EngineMetrics:
    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        r, labels = self.registry, ["model_name"]
        self.running = Gauge("vllm:num_requests_running", "Requests in the batch now decoding.", labels, registry=r)
        self.waiting = Gauge("vllm:num_requests_waiting", "Requests queued for the model.", labels, registry=r)
        self.kv_usage = Gauge(
            "vllm:kv_cache_usage_perc", "KV cache in use (1 = full); batch fill here.", labels, registry=r
        )
        self.prompt_tokens = Counter("vllm:prompt_tokens", "Prompt tokens processed.", labels, registry=r)
        self.generation_tokens = Counter("vllm:generation_tokens", "Tokens generated.", labels, registry=r)
        self.ttft = Histogram(
            "vllm:time_to_first_token_seconds",
            "Time to first token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.e2e = Histogram(
            "vllm:e2e_request_latency_seconds",
            "Request latency, arrival to last token.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.success = Counter("vllm:request_success", "Finished requests.", [*labels, "finished_reason"], registry=r)
        self.sleeping = Gauge("frugalserve_engine_is_sleeping", "Sleep level (0 = awake).", labels, registry=r)
        self.cache_hits = Counter(
            "frugalserve_engine_vision_cache_hits",
            "Images whose encoder output was reused.",
            labels,
            registry=r,
        )
        self.cache_misses = Counter(
            "frugalserve_engine_vision_cache_misses", "Images run through the encoder.", labels, registry=r
        )
        self.cache_bytes = Gauge(
            "frugalserve_engine_vision_cache_bytes", "Bytes held by the vision cache.", labels, registry=r
        )
        self.wake_seconds = Histogram(
            "frugalserve_engine_wake_seconds",
            "Time to wake up, by level.",
            [*labels, "level"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_name = model_name
        # Show every series from the start (at 0), so a scrape before the first request sees them all.
        for metric in (
            self.running,
            self.waiting,
            self.kv_usage,
            self.prompt_tokens,
            self.generation_tokens,
            self.sleeping,
            self.cache_hits,
            self.cache_misses,
            self.cache_bytes,
        ):
            metric.labels(model_name)

    def on_cache_lookup(self, hit: bool) -> None:
        (self.cache_hits if hit else self.cache_misses).labels(self.model_name).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
