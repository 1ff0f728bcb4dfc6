"""Cold starts through the gateway (issue 4).

1. Gateway-added time: from the replica becoming ready (the owner's transition) to the first response
   byte the gateway forwards, for requests that were held while the pool was cold. Target p95 <= 20 ms.
   The backend's own time to answer is included; it is measured directly and reported beside it.
2. Request-to-first-token (max_tokens=1) from stopped, from sleep level 1 and from sleep level 2.

Backends: the fake upstream (tests/fake_upstream.py, always), and the built-in engine with the demo
model when ``frugalserve.engine`` is importable (after the engine branch is merged).

    PYTHONPATH=src python benchmarks/cold_start.py [--cycles 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from frugalserve import config as cfg  # noqa: E402
from frugalserve.api.app import Gateway, create_app  # noqa: E402

FAKE = ROOT / "tests" / "fake_upstream.py"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def summary(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {"n": len(ms), "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(pct(ms, 0.95), 2),
            "max_ms": round(max(ms), 2)}  # fmt: skip


async def run_backend(name: str, command: str, model: str, cycles: int, log_dir: Path) -> dict[str, Any]:
    yaml = (
        f"pools:\n  - name: {name}\n    model: {model}\n"
        f"    backend: {{command: {command!r}, log_dir: {str(log_dir)!r}, startup_timeout_s: 300, sleep_api: vllm}}\n"
        f"    lifecycle: {{idle_sleep_s: null, idle_stop_s: null}}\n"
    )
    app = create_app(cfg.load_text(yaml))
    gw: Gateway = app.state.gateway
    await gw.startup()
    pool: Any = gw.pools.pools[name]
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    added: list[float] = []
    direct: list[float] = []
    rtft: dict[str, list[float]] = {"stopped": [], "sleep_level_1": [], "sleep_level_2": []}
    try:
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw", timeout=600) as client,
            httpx.AsyncClient(timeout=60) as real,
        ):
            for i in range(cycles):
                for mode in rtft:
                    if mode == "stopped":
                        await pool.sleep("bench", stop=True)
                    else:
                        await pool.wake("bench", wait=True)
                        level = int(mode[-1])
                        pool.replica.config = _with_level(pool.replica.config, level)
                        await pool.sleep("bench")
                    rid = f"{mode}-{i}"
                    t0 = time.perf_counter()
                    r = await client.post("/v1/chat/completions", json=body, headers={"x-request-id": rid})
                    rtft[mode].append(time.perf_counter() - t0)
                    assert r.status_code == 200, r.text
                    rec = gw.records.find(rid)  # type: ignore[attr-defined]
                    first_byte = rec.started_mono + rec.ttfb_s
                    added.append(first_byte - pool.replica.since)
                t0 = time.perf_counter()
                await real.post(pool.replica.base_url + "/v1/chat/completions", json=body)
                direct.append(time.perf_counter() - t0)
    finally:
        await gw.shutdown()
    return {
        "backend": name,
        "gateway_added_ready_to_first_byte": summary(added),
        "backend_direct_answer": summary(direct),
        "request_to_first_token": {k: summary(v) for k, v in rtft.items()},
    }


def _with_level(pool: cfg.PoolConfig, level: int) -> cfg.PoolConfig:
    import dataclasses

    return dataclasses.replace(pool, lifecycle=dataclasses.replace(pool.lifecycle, sleep_level=level))


async def main() -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--json", help="write the results here too")
    args = p.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        fake = f"{shlex.quote(sys.executable)} {shlex.quote(str(FAKE))} --port {{port}}"
        results.append(await run_backend("fake", fake, "fake-model", args.cycles, Path(tmp)))
        if importlib.util.find_spec("frugalserve.engine") is not None:
            model_dir = Path(tmp) / "demo-model"
            argv = (sys.executable, "-m", "frugalserve", "demo-model", str(model_dir))
            proc = await asyncio.create_subprocess_exec(*argv)
            await proc.wait()
            engine = (
                f"{shlex.quote(sys.executable)} -m frugalserve engine --model {model_dir}"
                " --served-model-name {model} --port {port}"
            )
            results.append(await run_backend("engine", engine, "qwen3-vl-demo", max(3, args.cycles // 4), Path(tmp)))
        else:
            print("frugalserve.engine not importable: engine rows skipped", file=sys.stderr)
    return results


if __name__ == "__main__":
    out = asyncio.run(main())
    print(json.dumps(out, indent=2))
    if "--json" in sys.argv:
        Path(sys.argv[sys.argv.index("--json") + 1]).write_text(json.dumps(out, indent=2))
