"""What one scrape of /metrics costs the gateway: render time with many pools and keys.

A gateway (built in process, not started: nothing but the registry is exercised) with ``--pools`` url pools
in three tiers, each with two replicas and an upstream telemetry sample per replica, and ``--keys`` API keys
with daily and monthly budgets and some spend. Every request series a busy gateway would have is filled
in: per pool two endpoints x four statuses, the latency histograms, tokens by kind, cold starts, routing
decisions. Then both renderers are timed ``--runs`` times each, alternated so machine noise hits them
alike: prometheus_client's ``generate_latest`` (what ``GatewayMetrics.render()`` ran before) and our
writer (frugalserve.metrics.exposition, what it runs now); also the registry's ``collect()`` alone, the
part both share. Median, p90 and max of each, their ratio, the exposition's size and series count.

Then the event loop's stall while scrapes run (``--stall-seconds`` per variant, one scrape every 50 ms): a
probe task sleeps 1 ms again and again and records how late it wakes (what any request waiting on the loop
would wait), with the GIL switch interval the gateway sets (1 ms). Variants: no scrape; the whole render
on the loop with generate_latest, and with ours; ours with the text written in a thread
(``GatewayMetrics.render_off_loop``, what GET /metrics runs).

    PYTHONPATH=src python benchmarks/metrics_render.py [--pools 20] [--keys 200] [--runs 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client import generate_latest  # noqa: E402

from frugalserve import config as cfg  # noqa: E402
from frugalserve.accounting.keys import ApiKey  # noqa: E402
from frugalserve.api.app import Gateway  # noqa: E402
from frugalserve.metrics.upstream import ReplicaSample  # noqa: E402


def build(pools: int, keys: int) -> Gateway:
    tiers = ("S", "M", "L")
    lines = ["auth: {enabled: true}", "pools:"]
    for i in range(pools):
        urls = f"['http://127.0.0.1:{20000 + 2 * i}/v1', 'http://127.0.0.1:{20001 + 2 * i}/v1']"
        lines.append(
            f"  - {{name: pool{i}, model: model{i}, tier: {tiers[i % 3]}, backend: {{urls: {urls}}},"
            f" gpu: {{usd_per_hour: {1 + i % 4}, type: L4}}}}"
        )
    g = Gateway(cfg.load_text("\n".join(lines)))
    m = g.metrics
    now = g.clock.monotonic()
    for i, pool in enumerate(g.pools):
        tier = tiers[i % 3]
        for endpoint in ("chat", "completions"):
            for status in ("200", "400", "429", "503"):
                m.requests.labels(pool.name, tier, endpoint, status).inc(10)
            m.latency.labels(pool.name, tier, endpoint).observe(0.5)
            m.ttft.labels(pool.name, tier, endpoint).observe(0.1)
        m.itl.labels(pool.name, tier).observe(0.02)
        m.generation_tokens.labels(pool.name, tier).inc(1000)
        for kind in ("text", "image", "video"):
            m.prompt_tokens.labels(pool.name, tier, kind).inc(100)
        m.tokens_saved.labels(pool.name, tier).inc(50)
        m.in_flight.labels(pool.name).set(0)
        for kind in ("connect", "timeout", "status"):
            m.upstream_errors.labels(pool.name, kind).inc()
        assert hasattr(pool, "targets")
        # what a scrape round leaves behind (set directly: no upstream servers run in this benchmark)
        samples = g.telemetry._samples
        for target in pool.targets:
            samples[(pool.name, target.replica)] = ReplicaSample(
                pool=pool.name,
                replica=target.replica,
                fresh=True,
                scraped_at=now,
                running=3.0,
                waiting=1.0,
                kv_cache_usage=0.4,
                prompt_tokens=1e6,
                generation_tokens=2e5,
                cache_hits={"prefix": 10.0},
                cache_queries={"prefix": 20.0},
            )
    for reason in ("score", "spill", "warm", "fallback", "cascade"):
        for tier in tiers:
            g.router.decisions.labels(tier, reason, "routed").inc()
    gate = g.accounting.gate
    wall = g.clock.wall()
    for k in range(keys):
        key = ApiKey(
            id=f"id{k:04d}",
            name=f"team-{k}",
            secret_hash=f"h{k}",
            prefix=f"fs-{k}",
            created_at=0.0,
            budget_usd_per_day=10.0,
            budget_usd_per_month=200.0,
        )
        gate.keys[key.id] = key
        gate.spend.charge(key.id, 1.0 + k % 7, wall, seq=k)
    return g


async def stall(g: Gateway, scrape: object, seconds: float) -> list[float]:
    """How late (ms) a 1 ms sleeper wakes while ``scrape`` (None, or an async callable) runs every 50 ms."""
    loop = asyncio.get_running_loop()
    lateness: list[float] = []
    stop = loop.time() + seconds

    async def probe() -> None:
        while loop.time() < stop:
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)
            lateness.append((time.perf_counter() - t0) * 1000 - 1.0)

    async def scraper() -> None:
        while callable(scrape) and loop.time() < stop:
            await scrape()
            await asyncio.sleep(0.05)

    await asyncio.gather(probe(), scraper())
    return lateness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    g = build(args.pools, args.keys)
    registry = g.metrics.registry
    text = g.metrics.render()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    renderers = {
        "generate_latest": lambda: generate_latest(registry),
        "ours": g.metrics.render,
        "collect only": lambda: list(registry.collect()),
    }
    times: dict[str, list[float]] = {name: [] for name in renderers}
    for _ in range(args.runs):
        for name, render in renderers.items():
            t0 = time.perf_counter()
            render()
            times[name].append((time.perf_counter() - t0) * 1000)
    result: dict[str, object] = {"pools": args.pools, "keys": args.keys, "series": series, "bytes": len(text)}
    print(f"{args.pools} pools, {args.keys} keys: {series} series, {len(text) / 1024:.0f} KiB, {args.runs} runs each")
    for name, values in times.items():
        values.sort()
        p50, p90 = statistics.median(values), values[int(0.9 * (len(values) - 1))]
        result[name] = {"p50_ms": p50, "p90_ms": p90, "max_ms": values[-1]}
        print(f"  {name:16} p50 {p50:6.2f} ms  p90 {p90:6.2f} ms  max {values[-1]:6.2f} ms")
    old, new = statistics.median(times["generate_latest"]), statistics.median(times["ours"])
    result["ratio_p50"] = old / new
    print(f"  generate_latest / ours: {old / new:.2f}x at the median")

    async def on_loop_generate_latest() -> None:
        generate_latest(registry)

    async def on_loop_ours() -> None:
        g.metrics.render()

    sys.setswitchinterval(0.001)  # as the gateway's server does
    variants = {
        "no scrape": None,
        "generate_latest on the loop": on_loop_generate_latest,
        "ours on the loop": on_loop_ours,
        "ours, written in a thread": g.metrics.render_off_loop,
    }
    print(f"event loop stall, 1 ms sleeper, a scrape every 50 ms, {args.stall_seconds:.0f} s each:")
    for name, scrape in variants.items():
        late = sorted(asyncio.run(stall(g, scrape, args.stall_seconds)))
        p99 = late[int(0.99 * (len(late) - 1))]
        result[f"stall {name}"] = {"p50_ms": statistics.median(late), "p99_ms": p99, "max_ms": late[-1]}
        print(f"  {name:28} late p50 {statistics.median(late):6.2f} ms  p99 {p99:6.2f} ms  max {late[-1]:6.2f} ms")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
