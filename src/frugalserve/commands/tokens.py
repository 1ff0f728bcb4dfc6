"""``frugalserve tokens [--json] [--max-image-tokens N] [--short-edge PX] [--max-input-pixels N] FILE...``.

What images cost in Qwen3-VL tokens: for each file, in the order given, its size, the size the gateway
would resize it to, and its token cost before (the processor's default settings) and after the budget.
Both counts include the two vision markers. Only headers are read (EXIF orientation included); no pixel
is decoded, so a file over the gateway's pixel limit is still counted, with a note that the gateway would
refuse it. A file that cannot be read gets an error row and the others are still counted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from PIL import Image

from frugalserve.budget import images, vision
from frugalserve.budget.limits import ImageLimits


@dataclass(frozen=True)
class Row:
    """One file's result: the sizes and costs, or the error that stopped it."""

    file: str
    width: int | None = None
    height: int | None = None
    resized_width: int | None = None
    resized_height: int | None = None
    tokens_before: int | None = None
    tokens_after: int | None = None
    note: str | None = None  # e.g. the gateway would refuse the image
    error: str | None = None


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", metavar="FILE", help="image files")
    p.add_argument("--json", action="store_true", help="print a JSON list of objects, one per file")
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
    p.add_argument(
        "--max-input-pixels",
        type=int,
        default=ImageLimits.max_input_pixels,
        metavar="N",
        help=f"the gateway's pixel limit, for the note on larger images (default {ImageLimits.max_input_pixels})",
    )


@contextlib.contextmanager
def _headers_only() -> Iterator[None]:
    """Pillow refuses to open images over its decoding-bomb size and warns about smaller ones; neither
    matters when no pixel is decoded. One process, one thread: the setting is restored afterwards."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def measure(path: str, max_tokens: int, short_edge: int | None, max_input_pixels: int) -> Row:
    """One file's row; never raises for a file that cannot be read or used."""
    try:
        with open(path, "rb") as f, _headers_only():
            img = images.open_header(f)
            w, h = images.oriented_size(img)
    except OSError as exc:
        return Row(path, error=exc.strerror or str(exc))
    except images.ImageError as exc:
        return Row(path, error=str(exc))
    except Exception as exc:  # a malformed header or EXIF block: Pillow raises many kinds
        return Row(path, error=f"not a readable image ({type(exc).__name__}: {exc})")
    try:
        rh, rw = vision.budget_size(h, w, max_tokens, short_edge)
    except vision.AspectRatioError as exc:
        return Row(path, width=w, height=h, error=f"{exc}; the gateway would refuse it")
    note = None
    if w * h > max_input_pixels:
        note = f"{w * h} pixels, over the gateway's limit of {max_input_pixels}: the gateway would refuse it"
    return Row(
        path,
        width=w,
        height=h,
        resized_width=rw,
        resized_height=rh,
        tokens_before=vision.image_tokens(h, w),
        tokens_after=rh * rw // vision.TOKEN_PIXELS + vision.MARKER_TOKENS,
        note=note,
    )


def _line(r: Row) -> str:
    if r.error is not None:
        return f"{r.file}: error: {r.error}"
    line = (
        f"{r.file}: {r.width}x{r.height} -> {r.resized_width}x{r.resized_height}, "
        f"{r.tokens_before} -> {r.tokens_after} tokens"
    )
    return f"{line} ({r.note})" if r.note else line


def run(args: argparse.Namespace) -> int:
    if args.max_image_tokens < 64:
        print("error: --max-image-tokens must be at least 64 (the processor's minimum)", file=sys.stderr)
        return 2
    short_edge = args.short_edge or None
    rows = [measure(path, args.max_image_tokens, short_edge, args.max_input_pixels) for path in args.files]
    if args.json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        for r in rows:
            print(_line(r))
        counted = [r for r in rows if r.tokens_before is not None and r.tokens_after is not None]
        if len(counted) > 1:
            before = sum(r.tokens_before or 0 for r in counted)
            after = sum(r.tokens_after or 0 for r in counted)
            print(f"total: {before} -> {after} tokens ({100 * (before - after) / before:.0f}% fewer)")
    return 1 if any(r.error is not None for r in rows) else 0
