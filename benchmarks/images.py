"""Benchmark for issue 5: image preprocessing speed and token reduction.

    PYTHONPATH=src python benchmarks/images.py

1. fetch -> decode -> resize -> encode of a 1600x1200 JPEG over real HTTP on 127.0.0.1, one at a time
   (target: p50 <= 15 ms on one core);
2. images per second with 2 worker threads (Pillow releases the GIL while decoding and resizing);
3. the token reduction at the default budget on generated screenshots, documents and photos of real sizes.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw

from frugalserve.budget import images, vision
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits, ImageLimits

# (kind, width, height): common screen, document-scan and camera sizes.
SIZES = [
    ("screenshot", 1920, 1080),
    ("screenshot", 2560, 1440),
    ("screenshot", 2880, 1800),
    ("screenshot", 1366, 768),
    ("screenshot", 3840, 2160),
    ("phone screenshot", 1170, 2532),
    ("document", 2480, 3508),
    ("document", 1700, 2200),
    ("document", 1275, 1650),
    ("photo", 4032, 3024),
    ("photo", 1600, 1200),
    ("photo", 4000, 3000),
    ("photo", 1080, 1080),
    ("photo", 640, 480),
]


def photo(w: int, h: int, seed: int = 0) -> bytes:
    """A photo-like JPEG: smooth gradients plus noise, so it compresses like a camera image."""
    base = Image.merge("RGB", [Image.linear_gradient("L").rotate(a).resize((w, h)) for a in (0, 90, 45)])
    noise = Image.effect_noise((w, h), 40 + seed).convert("RGB")
    img = Image.blend(base, noise, 0.3)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def screenshot(w: int, h: int) -> bytes:
    img = Image.new("RGB", (w, h), (245, 245, 245))
    d = ImageDraw.Draw(img)
    for y in range(40, h - 20, 28):
        d.text((30, y), "frugalserve benchmark line of text " * max(1, w // 300), fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


async def latency(n: int = 200) -> tuple[float, float]:
    data = photo(1600, 1200)

    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=data, content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/p.jpg", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}/p.jpg"
    limits = ImageLimits()
    times = []
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        for _ in range(n):
            t = time.perf_counter()
            images.preprocess(await f.fetch(url), limits)
            times.append((time.perf_counter() - t) * 1000)
    await server.close()
    times.sort()
    return statistics.median(times), times[int(0.95 * len(times))]


def throughput(workers: int = 2, n: int = 200) -> float:
    data = [photo(1600, 1200, seed=i) for i in range(8)]
    limits = ImageLimits()
    with ThreadPoolExecutor(workers) as pool:
        t = time.perf_counter()
        list(pool.map(lambda i: images.preprocess(data[i % len(data)], limits), range(n)))
        return n / (time.perf_counter() - t)


def reduction() -> list[tuple[str, int, int, int, int, int, int]]:
    rows = []
    limits = ImageLimits()
    for kind, w, h in SIZES:
        rh, rw = vision.budget_size(h, w, limits.max_tokens, limits.short_edge)
        rows.append((kind, w, h, rw, rh, vision.image_tokens(h, w), rh * rw // 1024 + 2))
    return rows


def main() -> None:
    p50, p95 = asyncio.run(latency())
    print(f"fetch+decode+resize+encode 1600x1200 JPEG, one at a time: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
    print(
        f"images/s, 1 thread: {throughput(1):.0f}; "
        f"{os.cpu_count()} threads: {throughput(os.cpu_count() or 2):.0f}"
    )
    # The check that matters for a real server: the budget image is what was counted.
    check = images.preprocess(screenshot(1920, 1080), ImageLimits())
    print(
        f"screenshot 1920x1080 sent as {check.width}x{check.height}: "
        f"{check.tokens_before} -> {check.tokens} tokens"
    )
    print("\n| kind | size | resized to | tokens before | tokens after | saved |\n|---|---|---|---|---|---|")
    before = after = 0
    for kind, w, h, rw, rh, tb, ta in reduction():
        before, after = before + tb, after + ta
        print(f"| {kind} | {w}x{h} | {rw}x{rh} | {tb} | {ta} | {100 * (tb - ta) / tb:.0f}% |")
    print(f"| **all** | | | {before} | {after} | {100 * (before - after) / before:.0f}% |")


if __name__ == "__main__":
    main()
