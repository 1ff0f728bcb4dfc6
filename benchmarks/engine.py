"""Benchmark the built-in engine with the demo model: TTFT and tokens/s (1 and 4 concurrent requests),
wake time from sleep levels 1 and 2, the vision cache's effect, and per-token detokenisation cost.

    PYTHONPATH=src python benchmarks/engine.py [--model DIR] [--device cpu|cuda] [--max-tokens 64]
    PYTHONPATH=src python benchmarks/engine.py --detok-only [--model DIR]

Starts a real engine process on a free loopback port, prints a Markdown table, and stops the process.
``--detok-only`` runs in-process: the time one decoding step spends turning ids into text and searching stop
strings at the 100th and the 2,000th generated token, incremental (what the engine does) against decoding
everything every step (what it did before), with the checkpoint's own tokenizer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

SRC = Path(__file__).resolve().parents[1] / "src"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(width: int, height: int, seed: int) -> str:
    from PIL import Image

    rnd = random.Random(seed)
    img = Image.frombytes("RGB", (width, height), rnd.randbytes(width * height * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


async def stream_one(client: httpx.AsyncClient, messages: list, max_tokens: int) -> tuple[float, float, int]:
    """(ttft s, total s, completion tokens) of one streamed request."""
    started = time.perf_counter()
    ttft, usage = None, 0
    body = {
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with client.stream("POST", "/v1/chat/completions", json=body) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content") and ttft is None:
                ttft = time.perf_counter() - started
            if chunk.get("usage"):
                usage = chunk["usage"]["completion_tokens"]
    total = time.perf_counter() - started
    return (ttft if ttft is not None else total), total, usage


async def concurrency(client: httpx.AsyncClient, n: int, max_tokens: int, rounds: int = 3) -> dict:
    ttfts, rates, aggregate = [], [], []
    for r in range(rounds):
        msgs = [[{"role": "user", "content": f"Tell me a story number {r}-{i}."}] for i in range(n)]
        started = time.perf_counter()
        results = await asyncio.gather(*(stream_one(client, m, max_tokens) for m in msgs))
        wall = time.perf_counter() - started
        for ttft, total, tokens in results:
            ttfts.append(ttft)
            rates.append(tokens / max(total - ttft, 1e-9))
        aggregate.append(sum(t for _, _, t in results) / wall)
    return {
        "ttft_ms": 1000 * statistics.median(ttfts),
        "per_request_tok_s": statistics.median(rates),
        "aggregate_tok_s": statistics.median(aggregate),
    }


async def wake(client: httpx.AsyncClient, level: int, rounds: int = 3) -> dict:
    wakes, firsts = [], []
    for _ in range(rounds):
        (await client.post("/sleep", params={"level": level})).raise_for_status()
        started = time.perf_counter()
        (await client.post("/wake_up")).raise_for_status()
        wakes.append(time.perf_counter() - started)
        await stream_one(client, [{"role": "user", "content": "hi"}], 1)
        firsts.append(time.perf_counter() - started)
    return {
        "wake_ms": 1000 * statistics.median(wakes),
        "wake_to_first_token_ms": 1000 * statistics.median(firsts),
    }


async def vision_cache(client: httpx.AsyncClient, size: tuple[int, int], rounds: int = 3) -> dict:
    cold, warm = [], []
    for r in range(rounds):
        url = png(*size, seed=1000 + r)
        msgs = [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe."},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }
        ]
        cold.append((await stream_one(client, msgs, 1))[0])
        warm.append((await stream_one(client, msgs, 1))[0])
    return {"miss_ttft_ms": 1000 * statistics.median(cold), "hit_ttft_ms": 1000 * statistics.median(warm)}


async def main_async(args: argparse.Namespace, url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:
        await stream_one(client, [{"role": "user", "content": "warm up"}], 4)
        out: dict = {}
        for n in (1, 4):
            out[f"concurrency_{n}"] = await concurrency(client, n, args.max_tokens)
        for level in (1, 2):
            out[f"wake_level_{level}"] = await wake(client, level)
        for size in ((448, 448), (1280, 960)):
            out[f"vision_{size[0]}x{size[1]}"] = await vision_cache(client, size)
        return out


STORY = (
    "The harbour master counted the boats twice, then wrote 42 in the ledger. "
    "港口的灯塔在夜里亮着\uff0c渔船一艘接一艘地回来。 "
    "Les enfants couraient sur la plage 🌊🐚 pendant que le soleil se couchait. "
    "def tally(boats):\n    return sum(1 for b in boats if b.home)\n"
)
STOPS = ("###", "</answer>", "\n\nUser:")


def detok_step_us(model_dir: str, at: tuple[int, ...] = (100, 2000), window: int = 40) -> dict:
    """Median microseconds per decoding step around token ``n``, new (incremental) and old (decode all)."""
    from transformers import AutoTokenizer

    from frugalserve.engine.detokenize import IncrementalDetokenizer, StopMatcher

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok.encode(STORY * 80)[: max(at) + 1]

    def decode(window_ids) -> str:
        return tok.decode(window_ids, skip_special_tokens=True)

    out: dict = {}
    for n in at:
        new, old = [], []
        detok, stops = IncrementalDetokenizer(decode), StopMatcher(STOPS)
        for k in range(n):
            started = time.perf_counter()
            stops.feed(detok.push(ids[k]))
            if k >= n - window:
                new.append(time.perf_counter() - started)
        for k in range(n - window, n):
            started = time.perf_counter()
            text = decode(ids[: k + 1])  # the old RowEmitter: everything, every step
            for s in STOPS:
                text.find(s)
            old.append(time.perf_counter() - started)
        out[f"token_{n}"] = {
            "incremental_us": 1e6 * statistics.median(new),
            "decode_all_us": 1e6 * statistics.median(old),
        }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="checkpoint directory (default: a fresh demo model in a temp dir)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--detok-only", action="store_true", help="only the in-process detokenisation measurement")
    args = p.parse_args()
    env = os.environ | {"PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            model = str(Path(tmp) / "demo")
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "frugalserve", "demo-model", model],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            print(f"demo-model written in {time.perf_counter() - started:.1f} s")
        detok = {f"detok_{k}": v for k, v in detok_step_us(model).items()}
        if args.detok_only:
            return report(detok)
        port = free_port()
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "frugalserve",
                "engine",
                "--model",
                model,
                "--port",
                str(port),
                "--device",
                args.device,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            url = f"http://127.0.0.1:{port}"
            started = time.perf_counter()
            while True:
                try:
                    if httpx.get(url + "/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
                if proc.poll() is not None or time.perf_counter() - started > 120:
                    raise SystemExit("engine did not start")
            print(f"engine ready in {time.perf_counter() - started:.1f} s")
            results = asyncio.run(main_async(args, url))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return report(results | detok)


def report(results: dict) -> int:
    print(json.dumps(results, indent=2))
    print("\n| measure | value |\n|---|---|")
    for group, values in results.items():
        for key, value in values.items():
            print(f"| {group} {key} | {value:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
