"""Guarded image decoding, resizing to a token budget, re-encoding, and the preprocessing cache.

CPU-bound: the gateway runs :func:`preprocess` in a worker thread (Pillow and libvips release the GIL while
they decode and resize; base64 is done in pieces). Every failure is an :class:`ImageError` whose message is
safe to show a client.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

from frugalserve.budget import offload, vision
from frugalserve.budget.limits import ImageLimits

# What the server can decode as it is; anything else is re-encoded.
_PASSTHROUGH = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_EXIF_ORIENTATION = 0x0112


class ImageError(ValueError):
    """An image that cannot be used; the message is for the client."""


class PillowPixelLimit(ImageError):
    """Pillow's own decompression-bomb limit refused the image before our limit was checked."""


@dataclass(frozen=True)
class ProcessedImage:
    data_url: str
    width: int  # as sent
    height: int
    original_width: int  # after EXIF orientation
    original_height: int
    pad_tokens: int  # as sent
    pad_tokens_before: int  # the original under the processor's defaults
    resized: bool

    @property
    def tokens(self) -> int:
        return self.pad_tokens + vision.MARKER_TOKENS

    @property
    def tokens_before(self) -> int:
        return self.pad_tokens_before + vision.MARKER_TOKENS

    @property
    def tokens_saved(self) -> int:
        return self.pad_tokens_before - self.pad_tokens


# The decoders run on untrusted bytes: the common web formats only (EPS would start Ghostscript, and the
# rarer decoders are attack surface nobody here needs). MPO (phone JPEGs) opens through JPEG.
INPUT_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "AVIF")


@functools.cache
def _input_formats() -> tuple[str, ...]:
    """The formats of :data:`INPUT_FORMATS` that this Pillow build can open."""
    Image.init()
    return tuple(f for f in INPUT_FORMATS if f in Image.OPEN)


def open_guarded(data: bytes, max_pixels: int) -> Image.Image:
    """Open an image and check its pixel count from the header alone, before any pixel is decoded."""
    try:
        img = open_header(data)
    except PillowPixelLimit:
        raise ImageError(f"image has more pixels than the limit of {max_pixels}") from None
    w, h = img.size
    if w * h > max_pixels:
        raise ImageError(f"image has {w}x{h} pixels, more than the limit of {max_pixels}")
    return img


def open_header(data: bytes | BinaryIO) -> Image.Image:
    """Open an image (one of :data:`INPUT_FORMATS`) reading its header only; every failure is an ImageError.

    Pillow's own decompression-bomb check still applies (an error above 2 x ``Image.MAX_IMAGE_PIXELS``).
    """
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data, formats=_input_formats())
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # the warning when it is an error
        raise PillowPixelLimit("image has more pixels than Pillow opens") from None
    except UnidentifiedImageError:
        raise ImageError(f"not a readable image (unknown format; accepted: {', '.join(_input_formats())})") from None
    except Exception as exc:  # any exception of a plugin reading a malformed header
        raise ImageError(f"not a readable image ({_reason(exc)})") from None
    w, h = img.size
    if w < 1 or h < 1:
        raise ImageError("image has no pixels")
    return img


def _reason(exc: BaseException) -> str:
    """A decoder's exception as a short message for the client (no memory addresses)."""
    text = _ADDRESS.sub("", str(exc)).strip()[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


_ADDRESS = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>|\s+at 0x[0-9a-fA-F]+")


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) after EXIF orientation, from the header."""
    w, h = img.size
    return (h, w) if img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8) else (w, h)


def preprocess(data: bytes, limits: ImageLimits) -> ProcessedImage:
    """Decode (guarded), fit to the budget, re-encode when needed; the result's size is exact.

    Every failure is an :class:`ImageError`: malformed files make Pillow and libvips raise all kinds of
    exceptions (struct.error, IndexError, TypeError, ...) while reading frames, transposing or resizing.
    """
    try:
        return _preprocess(data, limits)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"corrupt or unreadable image ({_reason(exc)})") from None


def _preprocess(data: bytes, limits: ImageLimits) -> ProcessedImage:
    img = open_guarded(data, limits.max_input_pixels)
    ow, oh = oriented_size(img)
    orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    animated = bool(getattr(img, "is_animated", False))  # n_frames would walk every frame of a GIF
    try:
        before = vision.image_pad_tokens(oh, ow)
        th, tw = vision.budget_size(oh, ow, limits.max_tokens, limits.short_edge)
    except vision.AspectRatioError as exc:
        raise ImageError(str(exc)) from None
    fits = (th, tw) == vision.smart_resize(oh, ow)
    if fits and orientation == 1 and not animated and img.format in _PASSTHROUGH:
        # Decode once anyway: a truncated or corrupt file must fail here, not in the model server.
        _decode_resized(img, ow, oh, orientation)
        url = offload.b64encode(data, f"data:{_PASSTHROUGH[img.format]};base64,")
        return ProcessedImage(url, ow, oh, ow, oh, before, before, resized=False)
    out = _decode_resized(img, tw if not fits else ow, th if not fits else oh, orientation)
    encoded, mime = _encode(out, limits)
    pads = vision.image_pad_tokens(out.height, out.width)
    url = offload.b64encode(encoded, f"data:{mime};base64,")
    return ProcessedImage(url, out.width, out.height, ow, oh, pads, before, resized=not fits)


def _decode_resized(img: Image.Image, width: int, height: int, orientation: int) -> Image.Image:
    if img.format == "JPEG":
        # Let libjpeg decode at 1/2, 1/4 or 1/8 scale when that still covers the target: far less work.
        rotated = orientation in (5, 6, 7, 8)
        img.draft("RGB", (height, width) if rotated else (width, height))
    img.seek(0)  # animations: the first frame
    img.load()
    if orientation != 1:  # exif_transpose copies the pixels even when there is nothing to do
        img = ImageOps.exif_transpose(img)
    if img.mode not in ("RGB", "L"):
        img = _flatten(img)
    if img.size != (width, height):
        img = resize(img, width, height)
    return img


def resize(img: Image.Image, width: int, height: int) -> Image.Image:
    """Resize an RGB or L image to exactly ``width`` x ``height``, antialiased.

    libvips' cubic reduce (kernel scaled to the ratio, vectorised) when it is installed: 2-3x faster than
    Pillow's bilinear and sharper (docs/benchmarks.md); Pillow otherwise, or if libvips' size is off.
    """
    vips = _vips()
    if vips is not None:
        bands = len(img.getbands())
        src = vips.Image.new_from_memory(img.tobytes(), img.width, img.height, bands, "uchar")
        out = src.resize(width / img.width, vscale=height / img.height, kernel="cubic")
        if (out.width, out.height) == (width, height) and out.bands == bands:
            return Image.frombytes(img.mode, (width, height), out.write_to_memory())
    return img.resize((width, height), Image.Resampling.BILINEAR, reducing_gap=2.0)


@functools.cache
def _vips() -> Any:
    """pyvips, set up for the gateway, or None when libvips cannot be loaded."""
    try:
        import pyvips
    except (ImportError, OSError):
        return None
    # Images are resized once each (the gateway has its own cache): libvips' operation cache would only
    # hold their pixels. Each image gets one thread; the gateway resizes several images in parallel.
    pyvips.cache_set_max(0)
    # libvips reports every resize at info level ("reducev: 7 point mask"); keep its warnings only, unless
    # the user has set a level for the "pyvips" logger.
    vips_logger = logging.getLogger("pyvips")
    if vips_logger.level == logging.NOTSET:
        vips_logger.setLevel(logging.WARNING)
    pyvips.concurrency_set(1)
    return pyvips


def _flatten(img: Image.Image) -> Image.Image:
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _encode(img: Image.Image, limits: ImageLimits) -> tuple[bytes, str]:
    buf = io.BytesIO()
    if limits.format == "jpeg":
        img.save(buf, "JPEG", quality=limits.quality)
    elif limits.format == "webp":
        img.save(buf, "WEBP", quality=limits.quality, method=0)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue(), f"image/{limits.format}"


def image_key(data: bytes, limits: ImageLimits) -> str:
    """Cache key: the bytes and every setting that changes the result."""
    h = hashlib.blake2b(data, digest_size=20)
    settings = (limits.max_tokens, limits.short_edge, limits.format, limits.quality, limits.max_input_pixels)
    h.update(repr(settings).encode())
    return h.hexdigest()


class PreprocessCache:
    """Results of :func:`preprocess` by :func:`image_key`, least recently used first out, bounded in MB.

    Owned by whoever creates it (one per gateway); not thread-safe: use it from the event loop only.
    """

    def __init__(self, max_mb: float) -> None:
        self.max_bytes = int(max_mb * 1024 * 1024)
        self._items: OrderedDict[str, ProcessedImage] = OrderedDict()
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ProcessedImage | None:
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return item

    def put(self, key: str, item: ProcessedImage) -> None:
        size = len(item.data_url)
        if size > self.max_bytes:
            return
        old = self._items.pop(key, None)
        if old is not None:
            self.size_bytes -= len(old.data_url)
        self._items[key] = item
        self.size_bytes += size
        while self.size_bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.size_bytes -= len(evicted.data_url)

    def __len__(self) -> int:
        return len(self._items)
