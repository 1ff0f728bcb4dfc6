"""What one scrape of /metrics costs the gateway: render time with many pools and keys.

A gateway (built in process, not started: nothing but the registry is exercised) with ``--pools`` url pools
in three tiers, each with two replicas and an upstream telemetry sample per replica, and ``--keys`` API keys
with daily and monthly budgets and some spend. Every request series a busy gateway would have is filled
in: per pool two endpoints x four statuses, the latency histograms, tokens by kind, cold starts, routing
decisions. Then ``GatewayMetrics.render()`` (what GET /metrics runs on the event loop) is timed ``--runs``
times; the median, p90 and max are printed with the exposition's size and series count.

    PYTHONPATH=src python benchmarks/metrics_render.py [--pools 20] [--keys 200] [--runs 200] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pools", type=int, default=20)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    g = build(args.pools, args.keys)
    text = g.metrics.render()
    series = sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        g.metrics.render()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    result = {
        "pools": args.pools,
        "keys": args.keys,
        "series": series,
        "bytes": len(text),
        "render_ms_p50": statistics.median(times),
        "render_ms_p90": times[int(0.9 * (len(times) - 1))],
        "render_ms_max": times[-1],
    }
    print(
        f"{args.pools} pools, {args.keys} keys: {series} series, {len(text) / 1024:.0f} KiB; render "
        f"p50 {result['render_ms_p50']:.2f} ms, p90 {result['render_ms_p90']:.2f} ms, "
        f"max {result['render_ms_max']:.2f} ms over {args.runs} runs"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
