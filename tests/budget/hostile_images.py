"""Malformed image files for the hostile-input tests: small valid seeds and seeded, bounded mutations.

A seeded mutator (bit flips, byte overwrites, truncation, chunk duplication and removal) over small valid
GIF, TIFF, PNG, JPEG and WebP files, plus two structure-aware sets that reach the frame readers: a GIF cut
inside its second frame's header (Pillow raised IndexError and struct.error there) and TIFF directory
entries with a wrong type, count or value (TypeError). The same cases on every run.
"""

from __future__ import annotations

import io
import random
import struct

from PIL import Image

from frugalserve.budget.limits import ImageLimits

CASES_PER_SEED = 40
# Small budgets keep every case fast: 320x240 is over 64 tokens, so the resize path runs too; a mutated
# header that claims a huge size is refused before decoding.
LIMITS = ImageLimits(max_tokens=64, max_input_pixels=2_000_000)


def _frames() -> list[Image.Image]:
    base = Image.linear_gradient("L").resize((320, 240))
    return [
        Image.merge("RGB", (base, base.rotate(a), base.transpose(Image.Transpose.FLIP_LEFT_RIGHT))) for a in (0, 90)
    ]


def _save(fmt: str, **kwargs: object) -> bytes:
    frames = _frames()
    buf = io.BytesIO()
    if kwargs.pop("animated", False):
        frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **kwargs)
    else:
        img = frames[0]
        mode = kwargs.pop("mode", None)
        if isinstance(mode, str):
            img = img.convert(mode)
        img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def _jpeg_with_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save("JPEG", quality=80, exif=exif.tobytes())


SEEDS = {
    "gif": _save("GIF", animated=True, duration=100, loop=0),
    "gif-still": _save("GIF"),
    "tiff": _save("TIFF"),
    "tiff-lzw-pages": _save("TIFF", animated=True, compression="tiff_lzw"),
    "png": _save("PNG"),
    "png-palette": _save("PNG", mode="P"),
    "jpeg": _jpeg_with_exif(),
    "webp": _save("WEBP", quality=60),
}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One to three random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        op = rng.choice(("flip", "overwrite", "truncate", "duplicate", "remove"))
        n = len(out)
        if n < 2:
            break
        if op == "flip":
            for _ in range(rng.randint(1, 8)):
                i = rng.randrange(n)
                out[i] ^= 1 << rng.randrange(8)
        elif op == "overwrite":
            i = rng.randrange(min(n, 256))  # headers are where parsers trip
            out[i : i + 4] = bytes(rng.choice((0, 0xFF, rng.randrange(256))) for _ in range(4))
        elif op == "truncate":
            del out[rng.randrange(1, n) :]
        elif op == "duplicate":
            i = rng.randrange(n)
            chunk = out[i : i + rng.randint(1, 64)]
            j = rng.randrange(n)
            out[j:j] = chunk
        else:
            i = rng.randrange(n)
            del out[i : i + rng.randint(1, 64)]
    return bytes(out)


def gif_cut_in_second_frame(data: bytes) -> list[bytes]:
    """The animation cut at each of the first 16 bytes of its second frame (graphic control extension,
    image descriptor)."""
    first = data.index(b"\x21\xf9\x04")
    second = data.index(b"\x21\xf9\x04", first + 1)
    return [data[: second + k] for k in range(1, 17)]


def tiff_directory_edits(data: bytes, n: int, rng: random.Random) -> list[bytes]:
    """``n`` copies of a little-endian TIFF with one or two directory entries given another type, count or
    value; half of them give a size or strip tag a fractional type (rational, float), which Pillow's frame
    reader used as a file offset."""
    assert data[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", data, 4)
    (entries,) = struct.unpack_from("<H", data, ifd)
    tags = {struct.unpack_from("<H", data, ifd + 2 + 12 * i)[0]: ifd + 2 + 12 * i for i in range(entries)}
    strips = [tags[t] for t in (256, 257, 273, 278, 279) if t in tags]
    out = []
    for i in range(n):
        b = bytearray(data)
        if i % 2:
            struct.pack_into("<H", b, rng.choice(strips) + 2, rng.choice((5, 10, 11, 12)))
        else:
            for _ in range(rng.randint(1, 2)):
                e = ifd + 2 + 12 * rng.randrange(entries)
                field = rng.randrange(3)
                if field == 0:
                    struct.pack_into("<H", b, e + 2, rng.randint(0, 17))
                elif field == 1:
                    struct.pack_into("<I", b, e + 4, rng.choice((0, 2, 3, rng.randrange(1 << 32))))
                else:
                    struct.pack_into("<I", b, e + 8, rng.choice((0, 1, 0xFFFFFFFF, rng.randrange(1 << 32))))
        out.append(bytes(b))
    return out


def cases(name: str) -> list[bytes]:
    rng = random.Random(f"frugalserve-fuzz-{name}")
    cases = [mutate(SEEDS[name], rng) for _ in range(CASES_PER_SEED)]
    if name == "gif":
        cases += gif_cut_in_second_frame(SEEDS[name])
    elif name.startswith("tiff"):
        cases += tiff_directory_edits(SEEDS[name], CASES_PER_SEED, rng)
    return cases
