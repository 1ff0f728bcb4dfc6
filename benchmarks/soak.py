"""Soak: many mixed requests through one gateway process, its memory sampled as they go.

A real gateway (with accounting on, SQLite) in front of the fake upstream, both on 127.0.0.1. The mix, by
request: plain chats, streamed chats, chats with a small PNG (a data URL: decoded, counted, re-encoded),
chats with a PNG over the image budget (resized), streams the client abandons after the first chunk, and
malformed bodies (400s). Concurrency is fixed; the gateway's RSS is read from /proc every 2,000 requests.
Reports RSS after warm-up and at the end, the growth per 10,000 requests over the second half (a leak
shows as steady growth), the status counts, and the rows in the usage database.

    python benchmarks/soak.py [--requests 50000] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import aiohttp
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import procs  # noqa: E402


def _png(width: int, height: int, seed: int) -> str:
    img = Image.effect_noise((width, height), 30 + seed % 20).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _bodies() -> list[tuple[str, bytes]]:
    small = [_png(64 + 32 * i, 64, i) for i in range(8)]  # 8 distinct small images: the cache sees repeats
    big = _png(1600, 1200, 1)
    text = [{"role": "user", "content": "Say something short."}]

    def chat(messages: list[dict[str, object]], **extra: object) -> bytes:
        return json.dumps({"model": "soak", "messages": messages, "max_tokens": 8, **extra}).encode()

    def image(url: str) -> list[dict[str, object]]:
        return [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "?"}],
            }
        ]

    mix: list[tuple[str, bytes]] = []
    mix += [("text", chat(text))] * 30
    mix += [("stream", chat(text, stream=True))] * 20
    mix += [("image", chat(image(u))) for u in small] * 2
    mix += [("big_image", chat(image(big)))] * 2
    mix += [("abandoned", chat(text, stream=True, max_tokens=64, x_fake={"interval_s": 0.01}))] * 8
    mix += [("malformed", b'{"model":"soak","messages":[{"role":["x"]}]}')] * 4
    return mix


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def drive(url: str, pid: int, total: int, concurrency: int) -> tuple[Counter[str], list[tuple[int, float]]]:
    mix = _bodies()
    rng = random.Random(7)
    statuses: Counter[str] = Counter()
    samples: list[tuple[int, float]] = [(0, rss_mb(pid))]
    done = 0
    headers = {"content-type": "application/json"}
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def worker() -> None:
            nonlocal done
            while done < total:
                done += 1
                n = done
                kind, body = rng.choice(mix)
                try:
                    async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
                        if kind == "abandoned":
                            await r.content.readany()
                            r.close()  # hang up mid-stream
                        else:
                            await r.read()
                        statuses[f"{kind} {r.status}"] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    statuses[f"{kind} {type(exc).__name__}"] += 1
                if n % 2000 == 0:
                    samples.append((n, rss_mb(pid)))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    samples.append((total, rss_mb(pid)))
    return statuses, samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="frugalserve-soak-"))
    db = f"sqlite:///{tmp / 'soak.db'}"
    with procs.fake_upstream(tmp) as up:
        config = (
            f"gateway: {{database: '{db}'}}\naccounting: {{spool_path: '{tmp / 'spool.jsonl'}'}}\n"
            f"pools:\n  - name: p\n    model: soak\n    backend: {{url: '{up}'}}\n"
        )
        with procs.gateway(tmp, config) as (url, proc):
            started = time.monotonic()
            statuses, samples = asyncio.run(drive(url, proc.pid, args.requests, args.concurrency))
            elapsed = time.monotonic() - started
            time.sleep(2)  # the usage writer's last batch
    import sqlalchemy as sa

    engine = sa.create_engine(db)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT count(*) FROM usage_records")).scalar_one()
    engine.dispose()
    half = [s for s in samples if s[0] >= args.requests // 2]
    growth = (half[-1][1] - half[0][1]) / max(1, half[-1][0] - half[0][0]) * 10_000 if len(half) > 1 else float("nan")
    warm = next((mb for n, mb in samples if n >= 4000), samples[-1][1])
    print(f"machine: {platform.processor() or platform.machine()}, {platform.system()} {platform.release()}")
    rate = args.requests / elapsed
    print(f"{args.requests} requests, concurrency {args.concurrency}, {elapsed:.0f} s ({rate:.0f} req/s)")
    start, end = samples[0][1], samples[-1][1]
    print(f"gateway RSS: start {start:.0f} MB, after warm-up (4,000) {warm:.0f} MB, end {end:.0f} MB")
    print(f"growth over the second half: {growth:+.2f} MB per 10,000 requests")
    print("RSS samples (requests, MB):", ", ".join(f"{n}:{mb:.0f}" for n, mb in samples))
    print(f"usage rows written: {rows} of {args.requests}")
    for key, n in sorted(statuses.items()):
        print(f"  {key}: {n}")


if __name__ == "__main__":
    main()
