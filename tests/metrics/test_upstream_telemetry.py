"""Upstream telemetry: a replica's own /metrics, scraped, re-exported on the gateway's /metrics and put in routing's
snapshot; a replica that stops answering is stale (up 0, its series absent), never zero.

The replicas are real HTTP servers on loopback serving a vLLM-sized exposition (its histograms included, values
set by the test); the gateway runs in-process. The last test scrapes the real built-in engine, started by a real
gateway process as a managed pool.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from frugalserve import config as cfg
from frugalserve.api.app import Gateway, create_app
from frugalserve.clock import ManualClock
from frugalserve.metrics.upstream import PoolTelemetry, UpstreamTelemetry, parse_exposition
from frugalserve.pools import StaticPool
from tests import procs, prom

MODEL = "Qwen/Qwen3-VL-8B-Instruct"
# Histograms of a vLLM server (names as vLLM exports them): the bulk of its exposition, which must be skipped.
_HISTOGRAMS = (
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:request_queue_time_seconds",
    "vllm:request_inference_time_seconds",
    "vllm:request_prefill_time_seconds",
    "vllm:request_decode_time_seconds",
    "vllm:request_time_per_output_token_seconds",
    "vllm:request_prompt_tokens",
    "vllm:request_generation_tokens",
    "vllm:iteration_tokens_total",
    "vllm:request_max_num_generation_tokens",
    "vllm:request_params_n",
    "vllm:request_params_max_tokens",
)


def vllm_exposition(values: Mapping[str, tuple[float, ...]]) -> str:
    """A vLLM-like /metrics: each of ``values`` as one series per engine (``engine="0"``, ``"1"``...), among
    histograms of 30 buckets per engine, counters' ``_created`` lines and look-alike names."""
    out: list[str] = []
    engines = max(len(v) for v in values.values())

    def labels(engine: int, extra: str = "") -> str:
        return f'{{engine="{engine}",model_name="{MODEL}"{extra}}}'

    for name in _HISTOGRAMS:
        out += [f"# HELP {name} Histogram of {name}.", f"# TYPE {name} histogram"]
        for e in range(engines):
            for i, le in enumerate([f"{0.001 * 2**i:.6g}" for i in range(30)] + ["+Inf"]):
                bucket = labels(e, ',le="' + le + '"')
                out.append(f"{name}_bucket{bucket} {float(i * 7)}")
            out += [
                f"{name}_count{labels(e)} 210.0",
                f"{name}_sum{labels(e)} 1234.5",
                f"{name}_created{labels(e)} 1.7e9",
            ]
    for name, per_engine in values.items():
        base = name.removesuffix("_total")
        kind = "counter" if name.endswith("_total") else "gauge"
        out += [f"# HELP {base} {base}.", f"# TYPE {base} {kind}"]
        for e, v in enumerate(per_engine):
            out.append(f"{name}{labels(e)} {v!r}")
            if kind == "counter":
                out.append(f"{base}_created{labels(e)} 1.7e9")
    # Names that start like the ones read, and must not be read as them.
    for e in range(engines):
        source, reason = labels(e, ',source="local_compute"'), labels(e, ',reason="capacity"')
        out.append(f"vllm:prompt_tokens_by_source_total{source} 999999.0")
        out.append(f"vllm:num_requests_waiting_by_reason{reason} 888888.0")
    out += [f'python_gc_objects_collected_total{{generation="{g}"}} 12345.0' for g in range(3)]
    out += ["process_resident_memory_bytes 2.1e9", "process_open_fds 123.0"]
    return "\n".join(out) + "\n"


VALUES: dict[str, tuple[float, ...]] = {
    "vllm:num_requests_running": (2.0, 1.0),
    "vllm:num_requests_waiting": (4.0, 0.0),
    "vllm:kv_cache_usage_perc": (0.25, 0.625),
    "vllm:prompt_tokens_total": (1000.0, 234.0),
    "vllm:generation_tokens_total": (500.0, 67.0),
    "vllm:prefix_cache_hits_total": (40.0, 0.0),
    "vllm:prefix_cache_queries_total": (90.0, 10.0),
    "frugalserve_engine_vision_cache_hits_total": (3.0,),
    "frugalserve_engine_vision_cache_misses_total": (1.0,),
}


class Replica:
    """A model server's /metrics on a loopback port; it can stop (refuse), hang, and come back on the same port."""

    def __init__(self, values: Mapping[str, tuple[float, ...]]) -> None:
        self.values = dict(values)
        self.scrapes = 0
        self.hang = False
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metrics(self, request: web.Request) -> web.Response:
        self.scrapes += 1
        if self.hang:
            await asyncio.sleep(30)
        return web.Response(text=vllm_exposition(self.values), content_type="text/plain")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def replicas() -> AsyncIterator[list[Replica]]:
    two = [
        Replica(VALUES),
        Replica({**VALUES, "vllm:num_requests_running": (5.0,), "vllm:kv_cache_usage_perc": (0.5,)}),
    ]
    for r in two:
        await r.start()
    try:
        yield two
    finally:
        for r in two:
            await r.stop()


def make_config(urls: list[str], interval_s: float) -> cfg.Config:
    return cfg.load_text(
        f"gateway: {{upstream_metrics_interval_s: {interval_s}}}\n"
        "pools:\n"
        f"  - {{name: small, model: m, tier: S, backend: {{urls: {urls!r}}}}}\n"
    )


@pytest.fixture
async def gateway(replicas: list[Replica]) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway]]:
    app = create_app(make_config([replicas[0].url, replicas[1].url], 0.1))
    gw: Gateway = app.state.gateway
    await gw.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
            yield c, gw
    finally:
        await gw.shutdown()


Series = prom.Samples


async def scrape(client: httpx.AsyncClient) -> Series:
    r = await client.get("/metrics")
    assert r.status_code == 200
    return prom.samples(r.text, "frugalserve_upstream_")


def key(name: str, replica: str, pool: str = "small", **extra: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset({"pool": pool, "replica": replica, **extra}.items())


async def until(client: httpx.AsyncClient, check: object, within_s: float = 10.0) -> Series:
    """The gateway's upstream series, polled until ``check(series)`` is true."""
    deadline = time.monotonic() + within_s
    while True:
        series = await scrape(client)
        if check(series):  # type: ignore[operator]
            return series
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within_s}s; last: {series}")
        await asyncio.sleep(0.05)


def series_of(series: Series, replica: str) -> dict[str, float]:
    """A replica's series as ``name`` (``name/cache`` for the cache counters) -> value."""
    out = {}
    for (name, labels), value in series.items():
        lab = dict(labels)
        if lab["replica"] == replica:
            out[name + (f"/{lab['cache']}" if "cache" in lab else "")] = value
    return out


EXPECTED_SMALL_0 = {
    "frugalserve_upstream_up": 1.0,
    "frugalserve_upstream_requests_running": 3.0,  # summed over vLLM's two engines
    "frugalserve_upstream_requests_waiting": 4.0,
    "frugalserve_upstream_kv_cache_usage_ratio": 0.625,  # the fuller engine
    "frugalserve_upstream_prompt_tokens_total": 1234.0,
    "frugalserve_upstream_generation_tokens_total": 567.0,
    "frugalserve_upstream_cache_hits_total/prefix": 40.0,
    "frugalserve_upstream_cache_queries_total/prefix": 100.0,
    "frugalserve_upstream_cache_hits_total/vision": 3.0,
    "frugalserve_upstream_cache_queries_total/vision": 4.0,  # hits + misses
}


def test_the_exposition_is_vllm_sized() -> None:
    # The parse time measured on this body is in the report: it must stand for vLLM's real 100+ KB.
    assert len(vllm_exposition(VALUES).encode()) > 100_000


def test_parse_reads_the_named_series_summed_over_engines_and_skips_look_alikes() -> None:
    values = parse_exposition(vllm_exposition(VALUES))
    assert values == {
        "vllm:num_requests_running": 3.0,
        "vllm:num_requests_waiting": 4.0,
        "vllm:kv_cache_usage_perc": 0.625,
        "vllm:prompt_tokens_total": 1234.0,
        "vllm:generation_tokens_total": 567.0,
        "vllm:prefix_cache_hits_total": 40.0,
        "vllm:prefix_cache_queries_total": 100.0,
        "frugalserve_engine_vision_cache_hits_total": 3.0,
        "frugalserve_engine_vision_cache_misses_total": 1.0,
    }


async def test_gateway_metrics_re_export_each_replicas_values_with_pool_and_replica_labels(
    gateway: tuple[httpx.AsyncClient, Gateway],
) -> None:
    client, _ = gateway
    series = await until(client, lambda s: key("frugalserve_upstream_up", "small-1") in s)
    assert series_of(series, "small-0") == EXPECTED_SMALL_0
    other = series_of(series, "small-1")
    assert other["frugalserve_upstream_requests_running"] == 5.0
    assert other["frugalserve_upstream_kv_cache_usage_ratio"] == 0.5


@pytest.mark.parametrize("how", ["refuses", "hangs"])
async def test_a_replica_that_stops_answering_is_up_0_with_its_series_absent_then_fresh_when_back(
    gateway: tuple[httpx.AsyncClient, Gateway], replicas: list[Replica], how: str
) -> None:
    client, _ = gateway
    await until(client, lambda s: s.get(key("frugalserve_upstream_up", "small-0")) == 1.0)
    if how == "refuses":
        await replicas[0].stop()
    else:
        replicas[0].hang = True
    series = await until(client, lambda s: s.get(key("frugalserve_upstream_up", "small-0")) == 0.0)
    assert series_of(series, "small-0") == {"frugalserve_upstream_up": 0.0}  # absent, not 0
    assert series_of(series, "small-1")["frugalserve_upstream_up"] == 1.0  # the other one is unaffected

    replicas[0].values["vllm:generation_tokens_total"] = (600.0, 67.0)
    if how == "refuses":
        await replicas[0].start()  # the same port
    else:
        replicas[0].hang = False
    series = await until(client, lambda s: s.get(key("frugalserve_upstream_up", "small-0")) == 1.0)
    assert series_of(series, "small-0") == {**EXPECTED_SMALL_0, "frugalserve_upstream_generation_tokens_total": 667.0}


async def test_the_routing_snapshot_carries_the_pools_aggregate_over_fresh_replicas(
    gateway: tuple[httpx.AsyncClient, Gateway], replicas: list[Replica]
) -> None:
    client, gw = gateway
    await until(client, lambda s: key("frugalserve_upstream_up", "small-1") in s)
    view = gw.router._snapshot(None, gw.clock.monotonic()).get("small")
    assert view is not None and view.telemetry is not None
    t = view.telemetry
    assert (t.fresh, t.stale, t.running, t.waiting, t.kv_cache_usage_max) == (2, 0, 3.0 + 5.0, 4.0 + 4.0, 0.625)

    await replicas[0].stop()
    await until(client, lambda s: s.get(key("frugalserve_upstream_up", "small-0")) == 0.0)
    after = gw.router._snapshot(None, gw.clock.monotonic()).pools[0].telemetry
    assert after is not None
    assert (after.fresh, after.stale, after.running, after.waiting, after.kv_cache_usage_max) == (1, 1, 5.0, 4.0, 0.5)


async def test_a_sample_older_than_three_intervals_is_stale_without_a_failed_scrape(
    replicas: list[Replica],
) -> None:
    # The Clock is manual: time passes with no scrape round (as when the loop is stalled).
    clock = ManualClock()
    config = make_config([replicas[1].url], 5)
    telemetry = UpstreamTelemetry([StaticPool(config.pools[0])], 5.0, clock)
    telemetry.start()
    try:
        await procs.eventually(lambda: replicas[1].scrapes == 1, what="the first scrape")
        await procs.eventually(lambda: telemetry.pool("small", clock.monotonic()) is not None, what="the round")
        await clock.advance(0)
        now = clock.monotonic()
        assert [s.fresh for s in telemetry.samples(now)] == [True]
        assert telemetry.pool("small", now) == PoolTelemetry(1, 0, 5.0, 4.0, 0.5, now)
        # 17 s later (3 intervals and the 2 s a round may wait on a slow replica) still fresh; past that,
        # stale, though no scrape failed.
        assert [s.fresh for s in telemetry.samples(now + 17.0)] == [True]
        later = now + 17.5
        (sample,) = telemetry.samples(later)
        assert (sample.fresh, sample.running, sample.scraped_at) == (False, None, now)
        assert telemetry.pool("small", later) == PoolTelemetry(0, 1, 0.0, 0.0, None, now)
    finally:
        await telemetry.stop()


async def test_interval_0_never_scrapes_and_exports_nothing(replicas: list[Replica]) -> None:
    app = create_app(make_config([replicas[0].url], 0))
    gw: Gateway = app.state.gateway
    await gw.startup()
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            await asyncio.sleep(0.5)
            assert await scrape(client) == {}
            view = gw.router._snapshot(None, gw.clock.monotonic()).get("small")
            assert view is not None and view.telemetry is None
    finally:
        await gw.shutdown()
    assert replicas[0].scrapes == 0


def test_a_negative_interval_is_refused_naming_the_key() -> None:
    with pytest.raises(cfg.ConfigError, match=r"gateway\.upstream_metrics_interval_s: must be >= 0"):
        make_config(["http://127.0.0.1:9"], -1)


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.engine
def test_the_built_in_engines_generation_tokens_are_re_exported_after_one_chat(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    model_dir = tmp_path / "demo-model"
    subprocess.run([sys.executable, "-m", "frugalserve", "demo-model", str(model_dir)], check=True, timeout=180)
    command = f"{shlex.quote(sys.executable)} -m frugalserve engine --model {model_dir} --served-model-name demo --port {{port}}"
    config = (
        f"gateway: {{database: 'sqlite:///{tmp_path / 'usage.db'}', upstream_metrics_interval_s: 0.2}}\n"
        "pools:\n  - name: demo\n    model: demo\n"
        f"    backend: {{command: {command!r}, log_dir: {str(tmp_path)!r}, startup_timeout_s: 100}}\n"
    )

    def upstream(url: str) -> dict[str, float]:
        text = httpx.get(url + "/metrics", timeout=5).text
        return {
            s.name + "".join(f"/{s.labels[k]}" for k in ("cache",) if k in s.labels): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name.startswith("frugalserve_upstream_") and s.labels.get("replica") == "demo-0"
        }

    with procs.gateway(tmp_path, config) as (url, _):
        time.sleep(0.5)
        assert upstream(url) == {}  # a cold managed pool has no ready replica to scrape
        r = httpx.post(
            url + "/v1/chat/completions",
            json={"model": "demo", "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 5},
            timeout=100,
        )
        assert r.status_code == 200, r.text
        usage = r.json()["usage"]
        seen: dict[str, float] = {}

        def scraped() -> bool:
            seen.update(upstream(url))
            return seen.get("frugalserve_upstream_generation_tokens_total") == usage["completion_tokens"]

        procs.wait_until(scraped, timeout=15, what="the engine's generation tokens re-exported")
    assert usage["completion_tokens"] > 0
    assert seen["frugalserve_upstream_up"] == 1.0
    assert seen["frugalserve_upstream_prompt_tokens_total"] == usage["prompt_tokens"]
    assert seen["frugalserve_upstream_requests_running"] == 0.0
    assert seen["frugalserve_upstream_cache_queries_total/vision"] == 0.0  # no image: the engine's vision cache
