"""What routing costs: decision time in process, and the latency ``model: "auto"`` adds in the gateway.

1. Decision time. Every request of the labelled set (tests/data/routing/labelled.jsonl, rendered as in
   benchmarks/routing_eval.py) goes once through the real budget stage (``prepare_chat``, not timed), then
   ``extract`` and ``decide`` are timed per call, over three snapshots of a three-tier deployment: every
   tier warm and idle; M asleep and L saturated; M starting and L saturated (the later rules of
   ``decide`` run there). Target: ``decide`` p99 <= 0.2 ms.
2. Added latency. The fake upstream (tests/fake_upstream.py) measured directly, and through one gateway
   process (``frugalserve up``) with three tiers of static pools in front of it, sent the same short chat
   request either as ``model: "auto"`` (routed to S) or naming S's model (pinned). Open loop at a fixed
   rate, targets alternated round by round so that machine noise hits them alike; each number is the
   median over rounds of that round's percentile, "added" is against the direct target of the same round.
   Then one request at a time, the three targets interleaved request by request: on a shared machine the
   open-loop percentiles move by more than routing costs, and this difference of medians does not.

    PYTHONPATH=src python benchmarks/routing.py [--rate 300] [--seconds 3] [--rounds 3] [--passes 20]
        [--sequential 2000] [--json FILE] [--skip-gateway]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks import gateway_overhead, routing_eval  # noqa: E402
from tests import procs  # noqa: E402

from frugalserve.api import validate  # noqa: E402
from frugalserve.budget.fetch import Fetcher  # noqa: E402
from frugalserve.budget.limits import FetchLimits, LimitsConfig  # noqa: E402
from frugalserve.budget.prepare import Prepared, prepare_chat  # noqa: E402
from frugalserve.errors import APIError  # noqa: E402
from frugalserve.routing.config import RoutingConfig  # noqa: E402
from frugalserve.routing.features import extract  # noqa: E402
from frugalserve.routing.policy import decide  # noqa: E402
from frugalserve.routing.snapshot import PoolsSnapshot  # noqa: E402

pct = gateway_overhead.pct
CHAT = {"messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 8}
PINNED = "qwen3-vl-2b"


# ---------------------------------------------------------------------------------------------------------
# 1. decision time


def snapshots() -> dict[str, PoolsSnapshot]:
    """The labelled set's deployment (routing_eval.DEPLOYMENT) in three states."""
    warm = routing_eval.snapshot()
    s, m, large = warm.pools

    def busy(**kw: Any) -> PoolsSnapshot:
        saturated = dataclasses.replace(large, in_flight=16, held=4)
        return PoolsSnapshot(0.0, (dataclasses.replace(s, in_flight=6), dataclasses.replace(m, **kw), saturated))

    return {
        "all warm, idle": warm,
        "M asleep, L saturated": busy(state="sleeping", ready_replicas=0, eta_s=2.0),
        "M starting, L saturated": busy(state="starting", ready_replicas=0, eta_s=40.0, held=3),
    }


Case = tuple[dict[str, Any], Prepared, dict[str, str]]


async def prepared_cases() -> list[Case]:
    """Each labelled request after the budget stage: the body, counts and headers extract() is given."""
    cases = []
    cache: dict[tuple[str, int, int], str] = {}
    async with Fetcher(FetchLimits(allow_http=False)) as fetcher:
        for item in routing_eval.load():
            body = routing_eval.materialise(item, cache)
            validate.chat(body)
            validate.messages(body, validate.COUNTED_PARTS)
            try:
                prepared = await prepare_chat(body, LimitsConfig(), fetcher)
            except APIError:
                continue
            headers = {k.lower(): v for k, v in item.get("headers", {}).items()}
            cases.append((body, prepared, headers))
    return cases


def time_decisions(cases: Sequence[Case], snap: PoolsSnapshot, cfg: RoutingConfig, passes: int) -> dict[str, Any]:
    """Per-call times of extract, decide and both, in seconds, over ``passes`` passes of every case."""
    ext: list[float] = []
    dec: list[float] = []
    both: list[float] = []
    reasons: dict[str, int] = {}
    clock = time.perf_counter
    gc.collect()
    for p in range(passes):
        for body, prepared, headers in cases:
            t0 = clock()
            features = extract(body, prepared, headers)
            t1 = clock()
            try:
                reason = decide(features, snap, cfg).reason
            except APIError as exc:  # refused (no tier fits, or wake refused): a decision too
                reason = exc.code or type(exc).__name__
            t2 = clock()
            ext.append(t1 - t0)
            dec.append(t2 - t1)
            both.append(t2 - t0)
            if p == 0:
                reasons[reason] = reasons.get(reason, 0) + 1
    return {"extract": ext, "decide": dec, "both": both, "reasons": reasons}


# ---------------------------------------------------------------------------------------------------------
# 2. added latency through a gateway process


def gateway_yaml(upstream: str, tmp: Path) -> str:
    pools = "".join(
        f"  - {{name: {name}, model: {model}, tier: {tier}, backend: {{url: '{upstream}'}}}}\n"
        for name, model, tier in (
            ("small", PINNED, "S"),
            ("medium", "qwen3-vl-8b", "M"),
            ("large", "qwen3-vl-32b", "L"),
        )
    )
    return (
        f"gateway: {{log_level: warning, database: 'sqlite:///{tmp / 'usage.db'}'}}\n"
        f"accounting: {{spool_path: '{tmp / 'spool.jsonl'}'}}\n"
        f"pools:\n{pools}"
    )


async def added_latency(rate: float, seconds: float, rounds: int, sequential: int) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-routing-"))
    with procs.fake_upstream(tmp) as upstream, procs.gateway(tmp, gateway_yaml(upstream, tmp)) as (gateway, _):
        targets = {
            "direct": (upstream, {**CHAT, "model": "fake-model"}),
            "pinned": (gateway, {**CHAT, "model": PINNED}),
            "auto": (gateway, {**CHAT, "model": "auto"}),
        }
        routes = {name: route_line(url, body) for name, (url, body) in targets.items() if url == gateway}
        for url, body in targets.values():
            await gateway_overhead.open_loop(url + "/v1/chat/completions", 100, 1.0, body=body)  # warm up

        per_round: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        order = list(targets)
        for i in range(rounds):
            for name in order[i % len(order) :] + order[: i % len(order)]:  # rotate who goes first
                url, body = targets[name]
                r = await gateway_overhead.open_loop(url + "/v1/chat/completions", rate, seconds, body=body)
                lat: list[float] = r["lat"]  # type: ignore[assignment]
                errors = float(r["errors"])  # type: ignore[arg-type]
                per_round[name].append({"p50": pct(lat, 0.5), "p99": pct(lat, 0.99), "n": len(lat), "errors": errors})
        one_by_one = await interleaved(targets, sequential)
        return {"routes": routes, "rounds": per_round, "sequential": one_by_one}


async def interleaved(targets: Mapping[str, tuple[str, dict[str, Any]]], n: int) -> dict[str, list[float]]:
    """One request at a time, the targets taken in turn (rotating who goes first): no queueing, and drift
    in the machine's load hits every target alike, so the difference of medians is the added work."""
    import aiohttp

    lat: dict[str, list[float]] = {name: [] for name in targets}
    order = list(targets)
    bodies = {name: json.dumps(body).encode() for name, (_, body) in targets.items()}
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession() as session:
        for i in range(n):
            for name in order[i % len(order) :] + order[: i % len(order)]:
                t0 = time.perf_counter()
                async with session.post(
                    targets[name][0] + "/v1/chat/completions", data=bodies[name], headers=headers
                ) as r:
                    await r.read()
                lat[name].append(time.perf_counter() - t0)
    return lat


def route_line(url: str, body: Mapping[str, Any]) -> str:
    """The route header of one request: the benchmark measures what it thinks it measures."""
    import httpx

    r = httpx.post(url + "/v1/chat/completions", json=body, timeout=10)
    r.raise_for_status()
    return r.headers.get("x-frugalserve-route", "(no x-frugalserve-route header)")


# ---------------------------------------------------------------------------------------------------------
# report


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.4f}"


def decision_table(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [
        "| snapshot | calls | extract p50 / p99 ms | decide p50 / p99 / max ms | both p50 / p99 ms | decisions |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        e, d, b = r["extract"], r["decide"], r["both"]
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items(), key=lambda kv: -kv[1]))
        lines.append(
            f"| {name} | {len(d)} | {ms(pct(e, 0.5))} / {ms(pct(e, 0.99))} | "
            f"{ms(pct(d, 0.5))} / {ms(pct(d, 0.99))} / {ms(max(d))} | {ms(pct(b, 0.5))} / {ms(pct(b, 0.99))} | "
            f"{reasons} |"
        )
    return lines


def latency_table(rounds: Mapping[str, list[dict[str, float]]]) -> list[str]:
    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[name])

    def added(name: str, key: str) -> float:
        return statistics.median(a[key] - d[key] for a, d in zip(rounds[name], rounds["direct"], strict=True))

    lines = [
        "| target | n | errors | p50 ms | p99 ms | added p50 ms | added p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in rounds:
        n = sum(int(r["n"]) for r in rounds[name])
        errors = sum(int(r["errors"]) for r in rounds[name])
        extra = "| |" if name == "direct" else f"| {added(name, 'p50') * 1e3:.3f} | {added(name, 'p99') * 1e3:.3f} |"
        lines.append(f"| {name} | {n} | {errors} | {med(name, 'p50') * 1e3:.3f} | {med(name, 'p99') * 1e3:.3f} {extra}")
    if "auto" in rounds and "pinned" in rounds:
        d50 = statistics.median(a["p50"] - p["p50"] for a, p in zip(rounds["auto"], rounds["pinned"], strict=True))
        d99 = statistics.median(a["p99"] - p["p99"] for a, p in zip(rounds["auto"], rounds["pinned"], strict=True))
        lines.append(f"\nauto - pinned, median over rounds: p50 {d50 * 1e3:+.3f} ms, p99 {d99 * 1e3:+.3f} ms")
    return lines


def sequential_table(lat: Mapping[str, list[float]]) -> list[str]:
    lines = ["| target | n | p50 ms | p90 ms | p99 ms | added p50 ms |", "|---|---|---|---|---|---|"]
    d50 = statistics.median(lat["direct"])
    for name, values in lat.items():
        p50 = statistics.median(values)
        added = "" if name == "direct" else f"{(p50 - d50) * 1e3:.3f}"
        lines.append(
            f"| {name} | {len(values)} | {p50 * 1e3:.3f} | {pct(values, 0.9) * 1e3:.3f} | "
            f"{pct(values, 0.99) * 1e3:.3f} | {added} |"
        )
    if "auto" in lat and "pinned" in lat:
        diff = statistics.median(lat["auto"]) - statistics.median(lat["pinned"])
        lines.append(f"\nauto - pinned, difference of medians: {diff * 1e3:+.3f} ms")
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=300, help="requests per second, open loop")
    p.add_argument("--seconds", type=float, default=3, help="per target per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--passes", type=int, default=20, help="passes over the labelled set per snapshot")
    p.add_argument("--sequential", type=int, default=2000, help="requests per target one at a time, interleaved")
    p.add_argument("--skip-gateway", action="store_true", help="decision time only")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)

    out: dict[str, Any] = {"machine": gateway_overhead.machine()}
    print(f"Machine: {out['machine']}\n")
    cases = asyncio.run(prepared_cases())
    cfg = RoutingConfig()
    decisions = {name: time_decisions(cases, snap, cfg, args.passes) for name, snap in snapshots().items()}
    print(f"Decision time: {len(cases)} labelled requests x {args.passes} passes per snapshot, default weights:")
    print("\n".join(decision_table(decisions)))
    out["decisions"] = {
        name: {
            key: {"p50_ms": pct(r[key], 0.5) * 1e3, "p99_ms": pct(r[key], 0.99) * 1e3, "max_ms": max(r[key]) * 1e3}
            for key in ("extract", "decide", "both")
        }
        | {"reasons": r["reasons"]}
        for name, r in decisions.items()
    }

    if not args.skip_gateway:
        lat = asyncio.run(added_latency(args.rate, args.seconds, args.rounds, args.sequential))
        out["latency"] = lat
        print(f"\nThrough the gateway at {args.rate:g} req/s, {args.rounds} rounds x {args.seconds:g} s per target:")
        for name, line in lat["routes"].items():
            print(f"  {name}: x-frugalserve-route: {line}")
        print("\n".join(latency_table(lat["rounds"])))
        print(f"\nOne request at a time, targets interleaved, {args.sequential} each:")
        print("\n".join(sequential_table(lat["sequential"])))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
