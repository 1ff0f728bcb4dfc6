"""How long the gateway's event loop stalls while it handles hostile large requests (issue 9, item 17).

Starts the fake upstream (tests/fake_upstream.py, standing in for the model server) and a gateway in front
of it, both real processes on 127.0.0.1. A probe sends GET /healthz every 5 ms over one keep-alive
connection and records each round trip: while the gateway's loop is blocked, the probe waits, so the
longest round trip is the longest stall. Phases:

1. quiet: the probe alone;
2. a second process sends, one after another, a chat with a 15 MB text prompt, then (next phases) the
   same text as one line (no line breaks: counting must cut it elsewhere), then a chat with a 20 MB
   data-URL image (a 15 MB PNG of noise), to a pool that counts and resizes (the budget stage);
3. the same requests to a pool with ``tokenizer: none`` (no counting, no image work): what the rest of
   the request path (JSON parsing, proxying) costs the loop.

Prints the probe's round trips (p50, p99, max) per phase; the target is no stall over 20 ms. The machine's
load matters: the numbers are only as quiet as its other processes.

    PYTHONPATH=src python benchmarks/loop_stall.py [--seconds 6] [--text-mb 15] [--image-mb 20] [--large-body-workers 0]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import io
import json
import multiprocessing
import os
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests import procs  # noqa: E402

PROBE_INTERVAL_S = 0.005
WORDS = "the quick brown fox jumps over a lazy dog while 42 cats count 1234567 tokens; naïve café 東京 🙂".split()


def text_prompt(megabytes: float, line_breaks: bool = True) -> str:
    """Varied words (ASCII, accents, CJK, emoji, digits) with line breaks: what a pasted document looks like;
    without them, one long line."""
    target = int(megabytes * 1_000_000)
    line = " ".join(WORDS[(i * 7) % len(WORDS)] for i in range(40)) + ("\n" if line_breaks else " ")
    return line * (target // len(line.encode()) + 1)


def image_data_url(megabytes: float) -> str:
    """A data URL of about ``megabytes`` MB: a PNG of noise (incompressible, so the file is that large)."""
    from PIL import Image

    side = int((megabytes * 1_000_000 * 3 / 4 / 3) ** 0.5)
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def hostile_body(kind: str, model: str, text_mb: float, image_mb: float) -> bytes:
    if kind in ("text", "one line"):
        content: Any = text_prompt(text_mb, line_breaks=kind == "text")
    else:
        content = [
            {"type": "text", "text": "What is in this picture?"},
            {"type": "image_url", "image_url": {"url": image_data_url(image_mb)}},
        ]
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4}
    return json.dumps(body, ensure_ascii=False).encode()


def hostile_sender(port: int, body: bytes, stop: Event, out: Any) -> None:
    """Runs in its own process: sends the request again and again until told to stop."""
    out.put("ready")
    results: list[tuple[int, float]] = []
    while not stop.is_set():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        t0 = time.perf_counter()
        conn.request("POST", "/v1/chat/completions", body, {"content-type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        results.append((resp.status, time.perf_counter() - t0))
        conn.close()
    out.put(results)


async def probe(base: str, seconds: float) -> list[float]:
    """Round trips of GET /healthz, one every PROBE_INTERVAL_S (or at once after a slow one)."""
    rtts: list[float] = []
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        deadline = time.perf_counter() + seconds
        next_at = time.perf_counter()
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            async with session.get(base + "/healthz") as resp:
                await resp.read()
            rtts.append(time.perf_counter() - t0)
            next_at = max(next_at + PROBE_INTERVAL_S, time.perf_counter())
            await asyncio.sleep(max(0.0, next_at - time.perf_counter()))
    return rtts


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def hostile_phase(base: str, port: int, body: bytes, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    stop = ctx.Event()
    out = ctx.Queue()
    sender = ctx.Process(target=hostile_sender, args=(port, body, stop, out))
    sender.start()
    try:
        await asyncio.to_thread(out.get, True, 120)
        rtts = await probe(base, seconds)
        stop.set()
        results = await asyncio.to_thread(out.get, True, 300)
    finally:
        sender.join(timeout=30)
        if sender.is_alive():
            sender.kill()
    return {"rtts": rtts, "results": results, "bytes": len(body)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fs-stall-"))
    with procs.fake_upstream(tmp) as upstream:
        config = (
            f"gateway: {{log_level: warning, max_body_mb: {max(args.text_mb, args.image_mb) * 1.2 + 1:.0f},"
            f" large_body_workers: {args.large_body_workers}}}\n"
            "pools:\n"
            f"  - {{name: vl, model: vl, backend: {{url: '{upstream}'}}}}\n"
            f"  - {{name: raw, model: raw, tokenizer: none, backend: {{url: '{upstream}'}}}}\n"
        )
        with procs.gateway(tmp, config) as (base, _):
            gw_port = int(base.rsplit(":", 1)[1])
            phases: dict[str, Any] = {"quiet": {"rtts": await probe(base, min(args.seconds, 3.0)), "results": []}}
            for model, label in (("vl", "budget stage"), ("raw", "tokenizer: none")):
                for kind in ("text", "one line", "image") if model == "vl" else ("text", "image"):
                    body = hostile_body(kind, model, args.text_mb, args.image_mb)
                    phases[f"{kind}, {label}"] = await hostile_phase(base, gw_port, body, args.seconds)
            return phases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--seconds", type=float, default=6.0, help="probe time per phase")
    p.add_argument("--text-mb", type=float, default=15.0)
    p.add_argument("--image-mb", type=float, default=20.0, help="size of the data URL")
    p.add_argument(
        "--large-body-workers",
        type=int,
        default=1,
        help="gateway.large_body_workers (0: parse in the gateway, as before)",
    )
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    phases = asyncio.run(measure(args))
    print(f"\nMachine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"/healthz round trips, one every {PROBE_INTERVAL_S * 1e3:g} ms, while the gateway handles the requests:")
    print(
        f"{'phase':<28} {'body MB':>8} {'requests':>9} {'s each':>7} {'n':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}"
    )
    for name, phase in phases.items():
        rtts, results = phase["rtts"], phase["results"]
        ok = all(status == 200 for status, _ in results)
        each = f"{sum(t for _, t in results) / len(results):.2f}" if results else "-"
        size = f"{phase['bytes'] / 1e6:.1f}" if "bytes" in phase else "-"
        print(
            f"{name:<28} {size:>8} {len(results):>8}{'' if ok else '!'} {each:>7} {len(rtts):>6} "
            f"{pct(rtts, 0.5) * 1e3:>7.2f} {pct(rtts, 0.99) * 1e3:>7.2f} {max(rtts) * 1e3:>7.2f}"
        )
    print("(! = some request did not answer 200; target: no round trip over 20 ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(phases))


if __name__ == "__main__":
    main()
