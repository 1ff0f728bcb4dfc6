"""How fast the cost planner replays traffic (issue 14): a month at 230,000 requests a day.

Generates seed 002's traffic (`--synthetic seed002,days=30`: 230,000 requests a day, a daily curve, quieter
weekends, bursts) and simulates it under two configs, each run in-process as `frugalserve simulate` runs it:

- `ladder`: one pool of one replica (64 requests at once) that sleeps and stops when idle (the seeds'
  scale-to-zero case);
- `autoscaled`: one pool of up to five replicas of 16 with the KPA autoscaler deciding every 2 s (1.3 million
  decisions a month, each the live PoolScaler.tick()).

Reported: the trace generation time, each simulation's wall time (median of --repeat runs), the requests
simulated per second, and the result's headline numbers so a change in behaviour shows beside a change in
speed.

    python benchmarks/simulate.py [--days 30] [--repeat 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from frugalserve import config as cfg  # noqa: E402
from frugalserve.sim import report  # noqa: E402
from frugalserve.sim.core import Simulation  # noqa: E402
from frugalserve.sim.perf import perf_for  # noqa: E402
from frugalserve.sim.policies import Policy  # noqa: E402
from frugalserve.sim.trace import synthetic  # noqa: E402

# Seed 002's requests take about 10 s each on the default performance model (200 output tokens at 20 tokens/s),
# so about 25 run at once on average and 60 at the daily peak: one replica of 64, or up to five of 16.
POOL = (
    "pools: [{{name: vl, model: demo, backend: {{command: 'vllm serve {{model}} --port {{port}}', sleep_api: vllm}},"
    " capacity: {capacity}, gpu: {{type: L4, usd_per_hour: 0.78}}, replicas: {{min: 0, max: {max}}},"
    " lifecycle: {{idle_sleep_s: 300, idle_stop_s: 1800}}}}]"
)
CONFIGS = {"ladder": POOL.format(capacity=64, max=1), "autoscaled": POOL.format(capacity=16, max=5)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=sorted(CONFIGS), help="run one config")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args()
    t0 = time.perf_counter()
    trace = synthetic(f"seed002,days={args.days},model=demo")
    gen_s = time.perf_counter() - t0
    print(f"trace: {trace.source}: {len(trace):,} requests, generated in {gen_s:.1f}s")
    out: dict[str, Any] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "requests": len(trace),
        "generate_s": gen_s,
        "runs": {},
    }
    for name, text in CONFIGS.items():
        if args.only and name != args.only:
            continue
        config = cfg.load_text(text)
        perf = {p.name: perf_for(p) for p in config.pools}
        times = []
        result = None
        for _ in range(args.repeat):
            t = time.perf_counter()
            sim = Simulation(config, perf, trace)
            sim.run()
            result = report.summarize(sim, Policy(name, (), config, {}), None)
            times.append(time.perf_counter() - t)
        assert result is not None
        median = statistics.median(times)
        row = {
            "median_s": median,
            "runs_s": times,
            "requests_per_s": len(trace) / median,
            "cost_usd": result.cost_usd,
            "always_on_cost_usd": result.always_on_cost_usd,
            "cold_starts": result.cold_starts,
            "p95_ttft_s": result.p95_ttft_s,
            "peak_replicas": max(p.peak_replicas for p in result.pools),
        }
        out["runs"][name] = row
        print(
            f"{name:>10}: {median:6.1f}s median of {args.repeat} ({len(trace) / median:,.0f} requests/s);"
            f" ${result.cost_usd:,.0f} vs always-on ${result.always_on_cost_usd:,.0f},"
            f" {result.cold_starts} cold starts,"
            f" P95 TTFT {result.p95_ttft_s:.2f}s, peak {row['peak_replicas']} replicas"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
