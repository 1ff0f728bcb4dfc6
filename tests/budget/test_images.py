from __future__ import annotations

import base64
import io
import logging

import pytest
from PIL import Image

from frugalserve.budget import images, vision
from frugalserve.budget.limits import ImageLimits


def _png(w: int, h: int, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, (w, h), (200, 10, 10) if mode == "RGB" else None).save(buf, "PNG")
    return buf.getvalue()


def _jpeg(w: int, h: int, orientation: int = 1) -> bytes:
    buf = io.BytesIO()
    img = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    return buf.getvalue()


def _decode(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


def test_large_photo_is_resized_to_the_budget_and_the_server_keeps_its_size() -> None:
    out = images.preprocess(_jpeg(1600, 1200), ImageLimits())
    img = _decode(out.data_url)
    assert img.size == (out.width, out.height)
    assert out.resized and out.width % 32 == 0 and out.height % 32 == 0
    assert vision.smart_resize(out.height, out.width) == (out.height, out.width)
    assert out.pad_tokens <= 1024 and min(out.width, out.height) <= 768
    assert out.pad_tokens_before == vision.image_pad_tokens(1200, 1600)
    assert out.tokens_saved == out.pad_tokens_before - out.pad_tokens > 0


def test_small_png_within_budget_passes_through_unchanged() -> None:
    data = _png(300, 200)
    out = images.preprocess(data, ImageLimits())
    assert not out.resized
    assert base64.b64decode(out.data_url.split(",", 1)[1]) == data
    assert out.pad_tokens == vision.image_pad_tokens(200, 300)


def test_exif_rotation_is_applied_before_sizing() -> None:
    out = images.preprocess(_jpeg(1600, 1000, orientation=6), ImageLimits())
    assert out.original_width == 1000 and out.original_height == 1600
    img = _decode(out.data_url)
    assert img.height > img.width


@pytest.mark.parametrize("side", [9000, 20000])
def test_pixel_limit_is_checked_before_decoding(side: int) -> None:
    # One colour: small on the wire, 81 MP or 400 MP in memory.
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, "PNG")
    with pytest.raises(images.ImageError, match=r"(pixels than|more than) the limit"):
        images.preprocess(buf.getvalue(), ImageLimits())


@pytest.mark.parametrize("data", [b"", b"not an image", _jpeg(800, 600)[:2000], _png(900, 900)[:300]])
def test_corrupt_or_truncated_images_are_refused(data: bytes) -> None:
    with pytest.raises(images.ImageError):
        images.preprocess(data, ImageLimits(max_tokens=64))


def test_animated_gif_takes_the_first_frame() -> None:
    frames = [Image.new("RGB", (400, 300), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = images.preprocess(buf.getvalue(), ImageLimits())
    img = _decode(out.data_url).convert("RGB")
    assert img.getpixel((10, 10))[0] > 200
    assert getattr(img, "n_frames", 1) == 1


def test_transparent_png_is_flattened_on_white_when_reencoded() -> None:
    out = images.preprocess(_png(2000, 2000, "RGBA"), ImageLimits(format="jpeg"))
    assert _decode(out.data_url).convert("RGB").getpixel((5, 5)) == (255, 255, 255)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_reencode_format_is_configurable(fmt: str) -> None:
    out = images.preprocess(_jpeg(2000, 1500), ImageLimits(format=fmt))  # type: ignore[arg-type]
    assert out.data_url.startswith(f"data:image/{fmt};base64,")
    assert _decode(out.data_url).format == fmt.upper()


def test_extreme_aspect_ratio_is_an_image_error() -> None:
    with pytest.raises(images.ImageError, match="aspect ratio"):
        images.preprocess(_png(8000, 20), ImageLimits())


def test_cache_evicts_least_recently_used_within_its_size() -> None:
    cache = images.PreprocessCache(max_mb=0.001)  # 1048 bytes
    item = images.ProcessedImage("x" * 400, 32, 32, 32, 32, 1, 1, False)
    cache.put("a", item)
    cache.put("b", item)
    assert cache.get("a") is item  # a is now the most recent
    cache.put("c", item)
    assert cache.get("b") is None
    assert cache.get("a") is item and cache.get("c") is item
    assert cache.size_bytes <= cache.max_bytes
    cache.put("huge", images.ProcessedImage("x" * 5000, 32, 32, 32, 32, 1, 1, False))
    assert cache.get("huge") is None and len(cache) == 2


def test_cache_key_changes_with_the_settings() -> None:
    data = _png(40, 40)
    assert images.image_key(data, ImageLimits()) != images.image_key(data, ImageLimits(max_tokens=512))
    assert images.image_key(data, ImageLimits()) == images.image_key(data, ImageLimits(max_count=3))


@pytest.mark.parametrize("use_vips", [True, False])
@pytest.mark.parametrize(
    ("w", "h", "budget", "edge"),
    [
        (1600, 1200, 1024, 768),
        (1366, 768, 1024, 768),
        (1170, 2532, 1024, 768),
        (4032, 3024, 256, None),
        (300, 7000, 64, None),
    ],
)
def test_resize_gives_exactly_the_budget_size(
    monkeypatch: pytest.MonkeyPatch, use_vips: bool, w: int, h: int, budget: int, edge: int | None
) -> None:
    if use_vips and images._vips() is None:
        pytest.skip("libvips is not installed")
    if not use_vips:
        monkeypatch.setattr(images, "_vips", lambda: None)
    th, tw = vision.budget_size(h, w, budget, edge)
    out = images.resize(Image.linear_gradient("L").resize((w, h)).convert("RGB"), tw, th)
    assert out.size == (tw, th) and out.mode == "RGB"
    assert vision.is_processor_size(th, tw)


def test_resize_is_antialiased_like_a_good_filter() -> None:
    # Stripes one pixel wide average to grey when shrunk; an aliasing resize would keep stripes.
    stripes = Image.new("L", (1600, 1200))
    stripes.putdata([255 * (x % 2) for _ in range(1200) for x in range(1600)])
    out = images.resize(stripes.convert("RGB"), 1024, 768).convert("L")
    lo, hi = out.crop((100, 100, 900, 700)).getextrema()
    assert 90 <= lo and hi <= 165


@pytest.mark.parametrize("fmt", ["PPM", "EPS", "ICO"])
def test_formats_outside_the_web_set_are_refused_before_decoding(fmt: str) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, fmt)
    with pytest.raises(images.ImageError, match="unknown format; accepted: JPEG, PNG, WEBP, GIF, TIFF, BMP"):
        images.preprocess(buf.getvalue(), ImageLimits())


def test_cache_key_changes_with_the_pixel_limit() -> None:
    data = _png(40, 40)
    assert images.image_key(data, ImageLimits()) != images.image_key(data, ImageLimits(max_input_pixels=100_000))


def test_libvips_does_not_log_every_resize_at_info_level(caplog: pytest.LogCaptureFixture) -> None:
    if images._vips() is None:
        pytest.skip("libvips is not installed")
    caplog.set_level(logging.INFO)
    out = images.preprocess(_jpeg(1600, 1200), ImageLimits())
    assert out.resized
    assert [r.getMessage() for r in caplog.records if r.name.startswith("pyvips")] == []
