"""``frugalserve tokens [--json] [--max-image-tokens N] FILE...``: what images cost in Qwen3-VL tokens.

For each image: its size, the size the gateway would resize it to, and its token cost before (the
processor's default settings) and after the budget. Both counts include the two vision markers.
Reads only the image headers (EXIF orientation included); no pixel is decoded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from frugalserve.budget import images, vision
from frugalserve.budget.limits import ImageLimits


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="image files")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects")
    p.add_argument(
        "--max-image-tokens",
        type=int,
        default=ImageLimits.max_tokens,
        metavar="N",
        help=f"token budget per image (default {ImageLimits.max_tokens}; at least 64)",
    )
    p.add_argument(
        "--short-edge",
        type=int,
        default=ImageLimits.short_edge,
        metavar="PX",
        help=f"longest allowed short side in pixels (default {ImageLimits.short_edge}; 0 = none)",
    )


def measure(path: str, max_tokens: int, short_edge: int | None) -> dict[str, Any]:
    with open(path, "rb") as f:
        data = f.read()
    img = images.open_guarded(data, ImageLimits().max_input_pixels)
    try:
        w, h = images.oriented_size(img)
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise images.ImageError(f"corrupt image ({exc})") from None
    try:
        rh, rw = vision.budget_size(h, w, max_tokens, short_edge)
    except vision.AspectRatioError as exc:
        raise images.ImageError(str(exc)) from None
    return {
        "file": path,
        "width": w,
        "height": h,
        "resized_width": rw,
        "resized_height": rh,
        "tokens_before": vision.image_tokens(h, w),
        "tokens_after": rh * rw // vision.TOKEN_PIXELS + vision.MARKER_TOKENS,
    }


def run(args: argparse.Namespace) -> int:
    if args.max_image_tokens < 64:
        print("error: --max-image-tokens must be at least 64 (the processor's minimum)", file=sys.stderr)
        return 2
    short_edge = args.short_edge or None
    rows: list[dict[str, Any]] = []
    failed = 0
    for path in args.files:
        try:
            rows.append(measure(path, args.max_image_tokens, short_edge))
        except (OSError, images.ImageError) as exc:
            failed += 1
            print(f"error: {path}: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            print(
                f"{r['file']}: {r['width']}x{r['height']} -> {r['resized_width']}x{r['resized_height']}, "
                f"{r['tokens_before']} -> {r['tokens_after']} tokens"
            )
        if len(rows) > 1:
            before = sum(r["tokens_before"] for r in rows)
            after = sum(r["tokens_after"] for r in rows)
            print(f"total: {before} -> {after} tokens ({100 * (before - after) / before:.0f}% fewer)")
    return 1 if failed else 0
