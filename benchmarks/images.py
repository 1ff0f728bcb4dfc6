"""Benchmark for issue 5: image preprocessing speed and token reduction.

    PYTHONPATH=src python benchmarks/images.py

1. fetch -> decode -> resize -> encode of a 1600x1200 JPEG over real HTTP on 127.0.0.1, one at a time and
   pinned to one core (target: p50 <= 15 ms): a photo-like JPEG (gradients, shapes, mild noise, quality 85)
   and a pure-noise JPEG (the worst case for the decoder), each with the resize in use (libvips) and with
   Pillow's (the fallback, and what was used before), interleaved in one run;
2. images per second with 1 and 2 worker threads;
3. the token reduction at the default budget on generated screenshots, documents and photos of real sizes.
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image, ImageDraw, ImageFilter

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
    """A photo-like JPEG: smooth gradients, blurred shapes, mild sensor noise; quality 85 (a few hundred KB)."""
    base = Image.merge("RGB", [Image.linear_gradient("L").rotate(a).resize((w, h)) for a in (0, 90, 45 + seed)])
    draw = ImageDraw.Draw(base)
    for i in range(40):
        x, y = (i * 7919 + seed * 131) % w, (i * 104729 + seed * 17) % h
        size = w // 20 + (i * 37) % (w // 5)
        colour = ((i * 67) % 256, (i * 151) % 256, (i * 29 + 90) % 256)
        (draw.ellipse if i % 2 else draw.rectangle)([x, y, x + size, y + size * (3 + i % 4) // 4], fill=colour)
    base = base.filter(ImageFilter.GaussianBlur(2))
    noise = Image.effect_noise((w, h), 30).convert("RGB")
    buf = io.BytesIO()
    Image.blend(base, noise, 0.08).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def noise_photo(w: int, h: int, seed: int = 0) -> bytes:
    """The worst case: gradients under heavy noise at quality 90 (about 750 KB for 1600x1200)."""
    base = Image.merge("RGB", [Image.linear_gradient("L").rotate(a).resize((w, h)) for a in (0, 90, 45)])
    noise = Image.effect_noise((w, h), 40 + seed).convert("RGB")
    buf = io.BytesIO()
    Image.blend(base, noise, 0.3).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def screenshot(w: int, h: int) -> bytes:
    img = Image.new("RGB", (w, h), (245, 245, 245))
    d = ImageDraw.Draw(img)
    for y in range(40, h - 20, 28):
        d.text((30, y), "frugalserve benchmark line of text " * max(1, w // 300), fill=(20, 20, 20))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pillow_resize() -> Any:
    """Context for images.preprocess with Pillow's resize (libvips hidden), to compare in the same run."""

    class Swap:
        def __enter__(self) -> None:
            self.saved = images._vips
            images._vips = lambda: None  # type: ignore[assignment]

        def __exit__(self, *exc: object) -> None:
            images._vips = self.saved  # type: ignore[method-assign]

    return Swap()


async def latency(samples: dict[str, bytes], n: int = 300) -> dict[str, list[float]]:
    """Milliseconds per fetch+preprocess, one at a time, variants interleaved so that load hits all alike."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=samples[request.match_info["name"]], content_type="image/jpeg")

    app = web.Application()
    app.router.add_get("/{name}", handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    limits = ImageLimits()
    times: dict[str, list[float]] = {}
    async with Fetcher(FetchLimits(allow_hosts=("127.0.0.1",))) as f:
        for i in range(n + 10):
            for name in samples:
                url = f"http://127.0.0.1:{server.port}/{name}"
                for resizer in ("libvips", "pillow"):
                    t = time.perf_counter()
                    data = await f.fetch(url)
                    if resizer == "pillow":
                        with pillow_resize():
                            images.preprocess(data, limits)
                    else:
                        images.preprocess(data, limits)
                    if i >= 10:  # warm-up
                        times.setdefault(f"{name}, {resizer}", []).append((time.perf_counter() - t) * 1000)
    await server.close()
    return times


def throughput(make: Callable[[int, int, int], bytes], workers: int, n: int = 200) -> float:
    data = [make(1600, 1200, i) for i in range(8)]
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
    samples = {"photo-like": photo(1600, 1200), "pure noise": noise_photo(1600, 1200)}
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    times = asyncio.run(latency(samples))
    os.sched_setaffinity(0, cores)
    print("fetch+decode+resize+encode, 1600x1200 JPEG -> 1024x768, one at a time on one core:")
    print("| image | resize | p50 ms | p95 ms |\n|---|---|---|---|")
    for key, ts in times.items():
        ts.sort()
        name, resizer = key.split(", ")
        size = len(samples[name]) // 1024
        print(f"| {name} ({size} KB) | {resizer} | {statistics.median(ts):.1f} | {ts[int(0.95 * len(ts))]:.1f} |")
    for name in samples:
        ratio = statistics.median(times[f"{name}, pillow"]) / statistics.median(times[f"{name}, libvips"])
        print(f"{name}: libvips path {ratio:.2f}x faster")
    for label, make in (("photo-like", photo), ("pure noise", noise_photo)):
        one, many = throughput(make, 1), throughput(make, len(cores))
        print(f"images/s, {label}: 1 thread {one:.0f}; {len(cores)} threads {many:.0f}")
    # The check that matters for a real server: the budget image is what was counted.
    check = images.preprocess(screenshot(1920, 1080), ImageLimits())
    print(f"screenshot 1920x1080 sent as {check.width}x{check.height}: {check.tokens_before} -> {check.tokens} tokens")
    print("\n| kind | size | resized to | tokens before | tokens after | saved |\n|---|---|---|---|---|---|")
    before = after = 0
    for kind, w, h, rw, rh, tb, ta in reduction():
        before, after = before + tb, after + ta
        print(f"| {kind} | {w}x{h} | {rw}x{rh} | {tb} | {ta} | {100 * (tb - ta) / tb:.0f}% |")
    print(f"| **all** | | | {before} | {after} | {100 * (before - after) / before:.0f}% |")


if __name__ == "__main__":
    main()
