"""How fast replicas follow a bursty load (issue 13): `frugalserve up` in front of a Ray-backed pool.

A local Ray head with 4 logical GPUs (tests/ray_cluster.py), one pool of up to 4 replicas, each a Ray actor
running the fake model server (tests/fake_upstream.py; every request takes ``--service-s``). An open-loop
Poisson load on 127.0.0.1 alternates quiet and burst phases; /admin/pools is polled every 0.25 s. Reported:

- per burst, the time from its start to the 2nd, 3rd and 4th replica serving (a replica that was not
  ready when the burst began has a request in flight);
- requests held for a replica (answered with ``x-frugalserve-cold-start-ms``) and their wait;
- replica-seconds (ready, starting or draining) against a fixed fleet sized for the peak for the whole run,
  and latency against the service time.

The autoscaler's windows are shortened (stable 20 s, panic 4 s) so a run takes about three minutes; the
defaults (60 s / 6 s) make every reaction proportionally slower, not different.

    python benchmarks/autoscale.py [--json out.json] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import procs  # noqa: E402
from tests.ray_cluster import NO_TOKEN, ray_head  # noqa: E402

MAX_REPLICAS = 4
CAPACITY = 4
TARGET = 0.7


def config(tmp: Path, address: str) -> str:
    command = f"{{python}} {procs.FAKE_UPSTREAM} --host {{host}} --port {{port}} --model {{model}}"
    return textwrap.dedent(
        f"""\
        gateway: {{database: 'sqlite:///{tmp}/bench.db', upstream_metrics_interval_s: 1}}
        pools:
          - name: bench
            model: bench-model
            tokenizer: none
            capacity: {CAPACITY}
            backend:
              command: "{command}"
              startup_timeout_s: 60
              ray:
                address: "{address}"
                num_gpus: 1
                runtime_env: {{env_vars: {{FRUGALSERVE_NODE_IP: 127.0.0.1}}}}
            replicas: {{min: 0, max: {MAX_REPLICAS}}}
            autoscale: {{target: {TARGET}, stable_window_s: 20, panic_window_s: 4, interval_s: 0.5,
                         scale_down_cooldown_s: 5}}
            lifecycle: {{idle_sleep_s: 10, idle_stop_s: 20}}
        """
    )


# (name, seconds, arrivals per second); the bursts need 10 x service_s in flight: ceil(10 / (4 x 0.7)) = 4.
PHASES = [("quiet", 10, 0.5), ("burst 1", 30, 10.0), ("lull", 45, 0.3), ("burst 2", 25, 10.0), ("tail", 40, 0.0)]
QUICK = [("quiet", 5, 0.5), ("burst 1", 20, 10.0), ("lull", 35, 0.3), ("burst 2", 15, 10.0), ("tail", 30, 0.0)]


async def one(client: httpx.AsyncClient, base: str, service_s: float, out: list[dict[str, Any]]) -> None:
    t0 = time.monotonic()
    body = {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 4,
        "x_fake": {"delay_s": service_s},
    }
    try:
        resp = await client.post(f"{base}/v1/chat/completions", json=body, timeout=120)
        status, held_ms = resp.status_code, resp.headers.get("x-frugalserve-cold-start-ms")
    except httpx.HTTPError as exc:
        status, held_ms = type(exc).__name__, None
    out.append(
        {"t": t0, "latency_s": time.monotonic() - t0, "status": status, "held_ms": int(held_ms) if held_ms else 0}
    )


async def load(base: str, phases: list[tuple[str, int, float]], service_s: float) -> tuple[list, list]:
    rng = random.Random(13)
    results: list[dict[str, Any]] = []
    marks: list[tuple[str, float]] = []
    tasks = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=200)) as client:
        for name, seconds, rate in phases:
            start = time.monotonic()
            marks.append((name, start))
            end = start + seconds
            t = start
            while True:
                t += rng.expovariate(rate) if rate > 0 else seconds
                if t >= end:
                    break
                await asyncio.sleep(max(0.0, t - time.monotonic()))
                tasks.append(asyncio.ensure_future(one(client, base, service_s, results)))
            await asyncio.sleep(max(0.0, end - time.monotonic()))
        marks.append(("end", time.monotonic()))
        await asyncio.gather(*tasks)
    return results, marks


async def poll(base: str, stop: asyncio.Event, timeline: list[tuple[float, list[dict[str, Any]]]]) -> None:
    async with httpx.AsyncClient() as client:
        while not stop.is_set():
            try:
                data = (await client.get(f"{base}/admin/pools", timeout=5)).json()["data"]
                replicas = next(p for p in data if p["name"] == "bench")["replicas"]
                timeline.append((time.monotonic(), [{**r, "removing": r.get("removing")} for r in replicas]))
            except (httpx.HTTPError, KeyError, StopIteration):
                pass
            await asyncio.sleep(0.25)


def followed(timeline: list, start: float) -> list[float]:
    """Seconds from ``start`` until each replica not ready at ``start`` first had a request in flight."""
    before = min(timeline, key=lambda e: abs(e[0] - start))[1]
    ready_then = {r["name"] for r in before if r["state"] == "ready"}
    first: dict[str, float] = {}
    for t, replicas in timeline:
        if t < start:
            continue
        for r in replicas:
            if r["name"] not in ready_then and r["in_flight"] > 0 and r["name"] not in first:
                first[r["name"]] = t - start
    return sorted(first.values())


def replica_seconds(timeline: list) -> tuple[float, float]:
    paid = asleep = 0.0
    for (t0, replicas), (t1, _) in itertools.pairwise(timeline):
        dt = t1 - t0
        paid += dt * sum(r["state"] in ("ready", "starting", "stopping") for r in replicas)
        asleep += dt * sum(r["state"] == "sleeping" for r in replicas)
    return paid, asleep


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def run(phases: list[tuple[str, int, float]], service_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fsbench") as d, ray_head(num_gpus=MAX_REPLICAS, num_cpus=16) as address:
        tmp = Path(d)
        with procs.gateway(tmp, config(tmp, address), NO_TOKEN) as (base, _):
            timeline: list = []
            stop = asyncio.Event()
            poller = asyncio.ensure_future(poll(base, stop, timeline))
            results, marks = await load(base, phases, service_s)
            stop.set()
            await poller
            events = (await asyncio.to_thread(httpx.get, f"{base}/admin/pools", timeout=5)).json()["data"][0]
    ok = [r for r in results if r["status"] == 200]
    held = [r["held_ms"] / 1000 for r in ok if r["held_ms"]]
    paid, asleep = replica_seconds(timeline)
    duration = marks[-1][1] - marks[0][1]
    bursts = {name: followed(timeline, t) for name, t in marks if name.startswith("burst")}
    peak = max(sum(r["state"] in ("ready", "starting") for r in reps) for _, reps in timeline)
    return {
        "phases": phases,
        "service_s": service_s,
        "requests": len(results),
        "ok": len(ok),
        "failed": len(results) - len(ok),
        "latency_p50_s": round(statistics.median(r["latency_s"] for r in ok), 3),
        "latency_p95_s": round(pct([r["latency_s"] for r in ok], 0.95), 3),
        "held": len(held),
        "held_wait_p50_s": round(statistics.median(held), 3) if held else 0.0,
        "held_wait_max_s": round(max(held), 3) if held else 0.0,
        "burst_to_replica_serving_s": {k: [round(x, 2) for x in v] for k, v in bursts.items()},
        "peak_replicas": peak,
        "replica_seconds": round(paid, 1),
        "replica_seconds_sleeping": round(asleep, 1),
        "fixed_fleet_replica_seconds": round(MAX_REPLICAS * duration, 1),
        "share_of_fixed_fleet": round(paid / (MAX_REPLICAS * duration), 3),
        "scale_events": [(e["action"], e["from"], e["to"], e["signal"]) for e in events["autoscale"]["events"]],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="shorter phases")
    p.add_argument("--service-s", type=float, default=1.0, help="seconds each request takes on a replica")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    out = asyncio.run(run(QUICK if args.quick else PHASES, args.service_s))
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
