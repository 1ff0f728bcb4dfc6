"""How much latency the gateway adds, and how many requests per second it sustains.

Starts the fake upstream (tests/fake_upstream.py), frugalserve in front of it, and LiteLLM's proxy in
front of the same upstream when a `litellm` executable is found (pass --litellm PATH or put it on PATH).
All three are real processes on 127.0.0.1; the load generator is a fourth. Measures, in one run:

1. Non-streaming latency at a fixed open-loop rate (default 300 req/s): direct vs through each proxy,
   in alternating rounds so that machine noise hits all targets alike; added latency = proxy - direct
   at p50 and p99.
2. Streaming: time to first byte direct vs through frugalserve (p50, p99).
3. Highest sustained rate: offered rates step up until a target completes < 99% of the requests
   within the window or its errors reach 1%.

    python benchmarks/gateway_overhead.py [--rate 300] [--seconds 5] [--rounds 3] [--litellm PATH]
        [--durability batch,wal]

``--durability batch,wal`` runs one frugalserve per accounting durability (targets ``frugalserve`` and
``frugalserve-wal``), side by side in the same alternating rounds, to show what the journal costs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import procs  # noqa: E402

# LiteLLM refuses to start without a master key; the same bearer token is sent to every target.
BENCH_KEY = "sk-" + "5e" * 32
BODY = {"model": "bench", "messages": [{"role": "user", "content": "Say something short."}], "max_tokens": 8}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def open_loop(
    url: str, rate: float, seconds: float, stream: bool = False, body: dict[str, object] | None = None
) -> dict[str, object]:
    """Send requests at a fixed rate regardless of answers; return latencies (or TTFB) and errors.
    ``body`` defaults to :data:`BODY` (benchmarks/routing.py sends its own)."""
    data = json.dumps({**(body or BODY), "stream": stream}).encode()
    headers = {"content-type": "application/json", "authorization": f"Bearer {BENCH_KEY}"}
    lat: list[float] = []
    errors = 0
    n = int(rate * seconds)
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one() -> None:
            nonlocal errors
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=data, headers=headers) as r:
                    if stream:
                        await r.content.readany()
                        lat.append(time.perf_counter() - t0)
                        await r.read()
                    else:
                        await r.read()
                        lat.append(time.perf_counter() - t0)
                    if r.status != 200:
                        errors += 1
            except (aiohttp.ClientError, TimeoutError):
                errors += 1

        start = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one()))
        sent_in = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    return {"lat": lat, "errors": errors, "n": n, "elapsed": elapsed, "sent_in": sent_in}


async def warm(url: str) -> None:
    await open_loop(url, 100, 1.0)


async def max_rate(url: str, rates: list[int], seconds: float) -> tuple[int, list[tuple[int, float, float]]]:
    best = 0
    trail = []
    for rate in rates:
        r = await open_loop(url, rate, seconds)
        n, errors, elapsed = r["n"], r["errors"], r["elapsed"]
        achieved = (n - errors) / elapsed  # type: ignore[operator]
        err_pct = 100 * errors / n  # type: ignore[operator]
        trail.append((rate, achieved, err_pct))
        # Sustained: <1% errors, and the offered load was kept up with (allowing a short drain).
        if err_pct < 1 and achieved >= 0.95 * rate:
            best = rate
        else:
            break
    return best, trail


def start_litellm(exe: str, upstream: str, tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = procs.free_port()
    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        "model_list:\n  - model_name: bench\n    litellm_params:\n"
        f"      model: openai/fake-model\n      api_base: {upstream}/v1\n      api_key: sk-none\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )
    env = {
        "LITELLM_MASTER_KEY": BENCH_KEY,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    proc = procs.spawn([exe, "--config", str(cfg), "--port", str(port), "--num_workers", "1"], tmp / "litellm.log", env)
    procs.wait_http(f"http://127.0.0.1:{port}/health/liveliness", timeout=120, proc=proc)
    return proc, f"http://127.0.0.1:{port}"


def machine() -> str:
    cpu = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout.splitlines():
            if line.startswith("Model name"):
                cpu = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, {platform.system()}"


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=300)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--litellm", default=shutil.which("litellm"))
    p.add_argument("--rates", default="50,100,200,300,400,500,750,1000,1250,1500,2000,2500,3000")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--gateway-yaml", default="", help="extra top-level YAML for the gateway's config")
    p.add_argument("--durability", default="batch", help="comma-separated accounting.durability values to compare")
    args = p.parse_args()
    if "batch" not in args.durability.split(","):
        p.error("--durability must include batch (the reference every other number is compared with)")
    tmp = Path(tempfile.mkdtemp(prefix="fs-bench-"))
    started: list[subprocess.Popen[bytes]] = []
    try:
        up_port = procs.free_port()
        up = procs.spawn(
            [sys.executable, str(procs.FAKE_UPSTREAM), "--port", str(up_port), "--model", "bench"], tmp / "upstream.log"
        )
        started.append(up)
        upstream = f"http://127.0.0.1:{up_port}"
        procs.wait_http(upstream + "/health", proc=up)

        targets = {"direct": upstream}
        for durability in args.durability.split(","):
            name = "frugalserve" if durability == "batch" else f"frugalserve-{durability}"
            gw_port = procs.free_port()
            (tmp / f"{name}.yaml").write_text(
                f"gateway: {{log_level: warning, database: 'sqlite:///{tmp / name}.db'}}\n"
                f"accounting: {{durability: {durability}, spool_path: '{tmp / name}-spool.jsonl', "
                f"journal_path: '{tmp / name}-journal.jsonl'}}\n"
                + (args.gateway_yaml + "\n" if args.gateway_yaml else "")
                + f"pools:\n  - {{name: bench, model: bench, backend: {{url: '{upstream}'}}}}\n"
            )
            cmd = ["-m", "frugalserve", "up", "--config", str(tmp / f"{name}.yaml"), "--port", str(gw_port)]
            gw = procs.spawn([sys.executable, *cmd], tmp / f"{name}.log")
            started.append(gw)
            targets[name] = f"http://127.0.0.1:{gw_port}"
            procs.wait_http(targets[name] + "/healthz", proc=gw)

        if args.litellm:
            ll, litellm = start_litellm(args.litellm, upstream, tmp)
            started.append(ll)
            targets["litellm"] = litellm
        else:
            print("litellm not found: pass --litellm PATH to compare (pip install 'litellm[proxy]')")

        for url in targets.values():
            await warm(url + "/v1/chat/completions")

        lat: dict[str, list[float]] = {k: [] for k in targets}
        errs: dict[str, int] = {k: 0 for k in targets}
        for _ in range(args.rounds):
            for name, url in targets.items():
                r = await open_loop(url + "/v1/chat/completions", args.rate, args.seconds)
                lat[name] += r["lat"]  # type: ignore[arg-type]
                errs[name] += r["errors"]  # type: ignore[operator]

        ttfb: dict[str, list[float]] = {"direct": [], "frugalserve": []}
        for _ in range(args.rounds):
            for name in ttfb:
                r = await open_loop(targets[name] + "/v1/chat/completions", args.rate, args.seconds, stream=True)
                ttfb[name] += r["lat"]  # type: ignore[arg-type]

        rates = [int(x) for x in args.rates.split(",")]
        sustained = {}
        for name, url in targets.items():
            sustained[name] = await max_rate(url + "/v1/chat/completions", rates, 3.0)

        out = {"machine": machine(), "rate": args.rate, "seconds_per_round": args.seconds, "rounds": args.rounds}
        print(f"\nMachine: {out['machine']}")
        print(f"Non-streaming at {args.rate:g} req/s, {args.rounds} x {args.seconds:g} s per target, alternating:")
        print(f"{'target':<12} {'n':>6} {'err':>4} {'p50 ms':>8} {'p99 ms':>8} {'added p50':>10} {'added p99':>10}")
        d50, d99 = pct(lat["direct"], 0.5), pct(lat["direct"], 0.99)
        for name in targets:
            p50, p99 = pct(lat[name], 0.5), pct(lat[name], 0.99)
            out[f"{name}_p50_ms"], out[f"{name}_p99_ms"] = p50 * 1e3, p99 * 1e3
            added = "" if name == "direct" else f"{(p50 - d50) * 1e3:>10.3f} {(p99 - d99) * 1e3:>10.3f}"
            print(f"{name:<12} {len(lat[name]):>6} {errs[name]:>4} {p50 * 1e3:>8.3f} {p99 * 1e3:>8.3f} {added}")
        t_d, t_g = statistics.median(ttfb["direct"]), statistics.median(ttfb["frugalserve"])
        out["ttfb_direct_p50_ms"], out["ttfb_gateway_p50_ms"] = t_d * 1e3, t_g * 1e3
        print(
            f"\nStreaming first byte p50: direct {t_d * 1e3:.3f} ms, through frugalserve {t_g * 1e3:.3f} ms "
            f"(+{(t_g - t_d) * 1e3:.3f} ms); p99 {pct(ttfb['direct'], 0.99) * 1e3:.3f} / "
            f"{pct(ttfb['frugalserve'], 0.99) * 1e3:.3f} ms"
        )
        print("\nHighest sustained rate (< 1% errors, >= 95% of offered completed; 3 s per step):")
        for name, (best, trail) in sustained.items():
            out[f"{name}_max_rps"] = best
            steps = ", ".join(f"{r}->{a:.0f}/{e:.1f}%" for r, a, e in trail)
            print(f"  {name:<12} {best:>6} req/s   [offered->achieved/errors: {steps}]")
        if "litellm" in sustained and sustained["litellm"][0]:
            print(f"  frugalserve / litellm: {sustained['frugalserve'][0] / sustained['litellm'][0]:.1f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(out, indent=2))  # noqa: ASYNC240 - once, at the end
    finally:
        for proc in reversed(started):
            procs.stop(proc)


if __name__ == "__main__":
    asyncio.run(main())
