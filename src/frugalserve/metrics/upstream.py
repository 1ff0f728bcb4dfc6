"""Upstream telemetry: each ready replica's own ``/metrics``, scraped on an interval and kept per replica.

A model server knows things the gateway cannot see from its side of the connection: how many requests
it is decoding and queueing, how full its KV cache is, how often its prefix and vision caches hit.
:class:`UpstreamTelemetry` owns that knowledge (one asyncio task scrapes every pool's ready replicas
concurrently, then sleeps the interval on the injected Clock), and hands it out three ways:

- :meth:`UpstreamTelemetry.samples`: a frozen :class:`ReplicaSample` per replica (the autoscaler's input);
- :meth:`UpstreamTelemetry.pool`: a frozen :class:`PoolTelemetry` per pool, built once per scrape round,
  which the router puts in each :class:`~frugalserve.routing.snapshot.PoolView` (no work per request);
- :class:`UpstreamCollector`: the samples re-exported on the gateway's ``/metrics`` with pool and replica
  labels (docs/observability.md, "Upstream telemetry").

A replica whose last scrape failed, or whose last good scrape is older than :data:`STALE_AFTER_INTERVALS`
intervals, is stale: ``up`` is 0 and its other series are absent. Its old numbers are never shown, and a
missing number is never shown as zero: an idle replica and a dead one must not look alike.

Parsing runs on the gateway's event loop, and vLLM's exposition is 100+ KB of histograms, so only the
lines of the few names below are looked at (one ``startswith`` per line with a tuple of prefixes); each
kept line's value is read after its label set. Series of one name are summed (vLLM labels them by model
and engine), except the KV cache usage, whose largest value is kept (the fullest engine is the limit).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from frugalserve.clock import Clock
from frugalserve.pools import Target
from frugalserve.tasks import stop_task

log = logging.getLogger("frugalserve.metrics.upstream")

# A replica is stale once its last good scrape is this many intervals old (a missed round or two is noise).
STALE_AFTER_INTERVALS = 3
# The most a scrape may take: the interval, within [1 s, 2 s]. One slow replica delays the next round by at
# most that; below 1 s a model server busy decoding on a shared CPU would be called stale while it is fine.
MAX_SCRAPE_TIMEOUT_S = 2.0
MIN_SCRAPE_TIMEOUT_S = 1.0
# vLLM's exposition is ~100-200 KB; a body past this is not a model server's metrics.
MAX_BODY_BYTES = 8 * 1024 * 1024

# The series read, by the field of ReplicaSample (or cache) they fill.
RUNNING = "vllm:num_requests_running"
WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"
PROMPT_TOKENS = "vllm:prompt_tokens_total"
GENERATION_TOKENS = "vllm:generation_tokens_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
VISION_HITS = "frugalserve_engine_vision_cache_hits_total"
VISION_MISSES = "frugalserve_engine_vision_cache_misses_total"
_NAMES = (
    RUNNING,
    WAITING,
    KV_USAGE,
    PROMPT_TOKENS,
    GENERATION_TOKENS,
    PREFIX_HITS,
    PREFIX_QUERIES,
    VISION_HITS,
    VISION_MISSES,
)
# A name followed by its label set or by the space before its value: never a longer name's prefix.
_PREFIXES = tuple(f"{n}{end}" for n in _NAMES for end in ("{", " "))


def parse_exposition(text: str) -> dict[str, float]:
    """The values of the names above in a Prometheus text exposition (absent names are absent), summed
    over each name's label sets (the KV cache usage: the largest)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith(_PREFIXES):
            continue
        brace = line.find("{")
        space = line.find(" ")
        if brace != -1 and brace < space:
            name, rest = line[:brace], line[line.rfind("}") + 1 :]
        else:
            name, rest = line[:space], line[space:]
        parts = rest.split()
        if not parts:
            continue
        try:
            value = float(parts[0])
        except ValueError:
            continue
        if math.isnan(value):
            continue
        old = values.get(name)
        if old is None:
            values[name] = value
        elif name == KV_USAGE:
            values[name] = max(old, value)
        else:
            values[name] = old + value
    return values


@dataclass(frozen=True, slots=True)
class ReplicaSample:
    """One replica as its last scrape found it. ``None``: the replica does not export that series.

    ``scraped_at`` is the Clock's monotonic time of the last good scrape (None: never one). A stale sample
    (``fresh`` False) keeps nothing but its names and that time: its numbers are not to be believed.
    """

    pool: str
    replica: str
    fresh: bool
    scraped_at: float | None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    prompt_tokens: float | None = None  # counters since the replica started
    generation_tokens: float | None = None
    cache_hits: Mapping[str, float] = field(default_factory=dict)  # by cache: "prefix", "vision"
    cache_queries: Mapping[str, float] = field(default_factory=dict)

    @classmethod
    def from_values(cls, pool: str, replica: str, values: Mapping[str, float], now: float) -> ReplicaSample:
        hits: dict[str, float] = {}
        queries: dict[str, float] = {}
        if PREFIX_HITS in values and PREFIX_QUERIES in values:
            hits["prefix"], queries["prefix"] = values[PREFIX_HITS], values[PREFIX_QUERIES]
        if VISION_HITS in values and VISION_MISSES in values:
            hits["vision"] = values[VISION_HITS]
            queries["vision"] = values[VISION_HITS] + values[VISION_MISSES]
        kv = values.get(KV_USAGE)
        return cls(
            pool=pool,
            replica=replica,
            fresh=True,
            scraped_at=now,
            running=values.get(RUNNING),
            waiting=values.get(WAITING),
            kv_cache_usage=None if kv is None else min(max(kv, 0.0), 1.0),
            prompt_tokens=values.get(PROMPT_TOKENS),
            generation_tokens=values.get(GENERATION_TOKENS),
            cache_hits=hits,
            cache_queries=queries,
        )

    def stale(self) -> ReplicaSample:
        return ReplicaSample(self.pool, self.replica, False, self.scraped_at)


@dataclass(frozen=True, slots=True)
class PoolTelemetry:
    """A pool's replicas as the last scrape round found them, for routing and scaling policies: the sums
    and the fullest KV cache over its fresh replicas, and how many were fresh and stale."""

    fresh: int
    stale: int
    running: float  # requests decoding, summed over fresh replicas
    waiting: float  # requests queued inside the servers
    kv_cache_usage_max: float | None  # None: no fresh replica exports it
    scraped_at: float  # when the round ended (Clock.monotonic)

    @classmethod
    def of(cls, samples: Iterable[ReplicaSample], now: float) -> PoolTelemetry:
        fresh = stale = 0
        running = waiting = 0.0
        kv: float | None = None
        for s in samples:
            if not s.fresh:
                stale += 1
                continue
            fresh += 1
            running += s.running or 0.0
            waiting += s.waiting or 0.0
            if s.kv_cache_usage is not None:
                kv = s.kv_cache_usage if kv is None else max(kv, s.kv_cache_usage)
        return cls(fresh, stale, running, waiting, kv, now)

    def all_stale(self) -> PoolTelemetry:
        return PoolTelemetry(0, self.fresh + self.stale, 0.0, 0.0, None, self.scraped_at)


class ScrapeSource(Protocol):
    """What telemetry needs of a pool (frugalserve.pools.Pool has it)."""

    name: str

    def ready_targets(self) -> list[Target]: ...


class UpstreamTelemetry:
    """The owner of every replica's last sample: one task scrapes, everything else reads frozen values."""

    def __init__(self, pools: Iterable[ScrapeSource], interval_s: float, clock: Clock) -> None:
        self.pools = list(pools)
        self.interval_s = interval_s
        self.clock = clock
        self.timeout_s = min(MAX_SCRAPE_TIMEOUT_S, max(MIN_SCRAPE_TIMEOUT_S, interval_s))
        # a round that is still waiting on a slow replica does not make the others' samples stale
        self.max_age_s = STALE_AFTER_INTERVALS * interval_s + self.timeout_s
        self._samples: dict[tuple[str, str], ReplicaSample] = {}
        self._pools: dict[str, PoolTelemetry] = {}
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0

    # -- reading (any task; no I/O, no parsing) -----------------------------------------------------

    def samples(self, now: float) -> list[ReplicaSample]:
        """Every scraped replica's sample; one whose last good scrape is too old comes back stale."""
        return [self._aged(s, now) for s in self._samples.values()]

    def pool(self, name: str, now: float) -> PoolTelemetry | None:
        """The pool's aggregate from the last round (None: never scraped); all stale when that is too old."""
        agg = self._pools.get(name)
        if agg is not None and now - agg.scraped_at > self.max_age_s:
            return agg.all_stale()
        return agg

    def _aged(self, s: ReplicaSample, now: float) -> ReplicaSample:
        if s.fresh and s.scraped_at is not None and now - s.scraped_at > self.max_age_s:
            return s.stale()
        return s

    # -- the owner task ------------------------------------------------------------------------------

    def start(self) -> None:
        if not self.enabled or self._task is not None:
            return
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=0),
        )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="upstream-telemetry")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _run(self) -> None:
        while True:
            try:
                await self.scrape_once()
            except Exception:  # a bug here must not end telemetry for good; each round starts afresh
                log.exception("upstream telemetry: a scrape round failed")
            await self.clock.sleep(self.interval_s)

    async def scrape_once(self) -> None:
        """One round: every ready replica of every pool at once; replicas no longer ready are forgotten."""
        assert self._session is not None, "start() first"
        wanted = [(pool.name, t) for pool in self.pools for t in pool.ready_targets()]
        results = await asyncio.gather(*(self._scrape(self._session, t) for _, t in wanted))
        now = self.clock.monotonic()
        samples: dict[tuple[str, str], ReplicaSample] = {}
        for (pool, target), values in zip(wanted, results, strict=True):
            key = (pool, target.replica)
            if values is not None:
                samples[key] = ReplicaSample.from_values(pool, target.replica, values, now)
            else:
                last = self._samples.get(key)
                samples[key] = last.stale() if last is not None else ReplicaSample(pool, target.replica, False, None)
        by_pool: dict[str, list[ReplicaSample]] = {}
        for s in samples.values():
            by_pool.setdefault(s.pool, []).append(s)
        self._samples = samples
        self._pools = {name: PoolTelemetry.of(group, now) for name, group in by_pool.items()}

    async def _scrape(self, session: aiohttp.ClientSession, target: Target) -> dict[str, float] | None:
        """The replica's values, or None when it did not answer 200 with a readable body in time."""
        try:
            async with session.get(f"{target.base_url}/metrics", headers=target.headers) as resp:
                if resp.status != 200:
                    return None
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_any():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        return None
                    chunks.append(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return None
        return parse_exposition(b"".join(chunks).decode("utf-8", "replace"))


class UpstreamCollector(Collector):
    """Re-exports the fresh samples under frugalserve's names, with pool and replica labels."""

    def __init__(self, telemetry: UpstreamTelemetry) -> None:
        self.telemetry = telemetry

    def describe(self) -> Iterator[Metric]:
        return iter(self._families())

    def collect(self) -> Iterator[Metric]:
        up, running, waiting, kv, prompt, generation, hits, queries = families = self._families()
        for s in self.telemetry.samples(self.telemetry.clock.monotonic()):
            labels = [s.pool, s.replica]
            up.add_metric(labels, 1.0 if s.fresh else 0.0)
            # A stale sample carries no numbers (ReplicaSample.stale), so nothing below adds its series.
            for family, value in (
                (running, s.running),
                (waiting, s.waiting),
                (kv, s.kv_cache_usage),
                (prompt, s.prompt_tokens),
                (generation, s.generation_tokens),
            ):
                if value is not None:
                    family.add_metric(labels, value)
            for cache, value in s.cache_hits.items():
                hits.add_metric([*labels, cache], value)
            for cache, value in s.cache_queries.items():
                queries.add_metric([*labels, cache], value)
        return iter(families)

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
    ]:
        labels = ["pool", "replica"]
        cache = [*labels, "cache"]
        return (
            GaugeMetricFamily(
                "frugalserve_upstream_up", "1: the replica's last scrape is fresh; 0: stale.", labels=labels
            ),
            GaugeMetricFamily(
                "frugalserve_upstream_requests_running", "Requests the replica is decoding.", labels=labels
            ),
            GaugeMetricFamily(
                "frugalserve_upstream_requests_waiting", "Requests queued inside the replica.", labels=labels
            ),
            GaugeMetricFamily(
                "frugalserve_upstream_kv_cache_usage_ratio", "The replica's KV cache in use, 0..1.", labels=labels
            ),
            CounterMetricFamily(
                "frugalserve_upstream_prompt_tokens", "Prompt tokens the replica processed.", labels=labels
            ),
            CounterMetricFamily(
                "frugalserve_upstream_generation_tokens", "Tokens the replica generated.", labels=labels
            ),
            CounterMetricFamily(
                "frugalserve_upstream_cache_hits", "Cache hits in the replica, by cache (prefix, vision).", labels=cache
            ),
            CounterMetricFamily(
                "frugalserve_upstream_cache_queries",
                "Cache lookups in the replica, by cache (prefix, vision).",
                labels=cache,
            ),
        )
