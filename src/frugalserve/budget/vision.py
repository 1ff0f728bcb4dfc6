"""Qwen3-VL's visual token arithmetic, matching transformers 5.23.0.

Images follow ``qwen2_vl.image_processing*.smart_resize`` with Qwen3-VL's settings (patch 16, merge 2:
one token per 32x32 pixels; 65,536 to 16,777,216 pixels). Videos follow ``Qwen3VLVideoProcessor``
(sample at 2 fps, 4..768 frames, frames in pairs, one pixel budget for the whole clip) and
``Qwen3VLProcessor.replace_video_token`` (a ``<t seconds>`` text and vision markers per frame pair).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PATCH_SIZE = 16
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
FACTOR = PATCH_SIZE * MERGE_SIZE  # 32: one visual token covers FACTOR x FACTOR pixels
TOKEN_PIXELS = FACTOR * FACTOR
IMAGE_MIN_PIXELS = 65_536
IMAGE_MAX_PIXELS = 16_777_216
MARKER_TOKENS = 2  # <|vision_start|> and <|vision_end|>
MAX_ASPECT_RATIO = 200

VIDEO_MIN_PIXELS = 128 * 32 * 32
VIDEO_MAX_PIXELS = 32 * 32 * 768
VIDEO_FPS = 2.0
VIDEO_MIN_FRAMES = 4
VIDEO_MAX_FRAMES = 768
VIDEO_MAX_TOKENS_PER_FRAME = 768


class AspectRatioError(ValueError):
    """The processor refuses images whose long side is more than 200 times the short side."""


def smart_resize(
    height: float,
    width: float,
    factor: int = FACTOR,
    min_pixels: int = IMAGE_MIN_PIXELS,
    max_pixels: int = IMAGE_MAX_PIXELS,
) -> tuple[int, int]:
    """The size the processor resizes an image to: multiples of ``factor`` with min <= h*w <= max."""
    if min(height, width) <= 0:
        raise AspectRatioError(f"image has no pixels ({width}x{height})")
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise AspectRatioError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {width}x{height}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


def image_pad_tokens(height: int, width: int) -> int:
    """``<|image_pad|>`` tokens of one image under the default processor settings."""
    h, w = smart_resize(height, width)
    return h * w // TOKEN_PIXELS


def image_tokens(height: int, width: int) -> int:
    """Prompt tokens of one image: its pads plus the two vision markers."""
    return image_pad_tokens(height, width) + MARKER_TOKENS


def budget_size(height: int, width: int, max_tokens: int, short_edge: int | None = None) -> tuple[int, int]:
    """The size to resize an image to so that it costs at most ``max_tokens`` pad tokens and its short
    side is at most ``short_edge``; returns the processor's own size when that already fits.

    The result is a multiple of 32 inside the processor's pixel limits, so the server's resize of it is a
    no-op and the count stays exact.
    """
    if max_tokens * TOKEN_PIXELS < IMAGE_MIN_PIXELS:
        raise ValueError(f"max_tokens must be >= {IMAGE_MIN_PIXELS // TOKEN_PIXELS}")
    natural = smart_resize(height, width)
    fits_tokens = natural[0] * natural[1] <= max_tokens * TOKEN_PIXELS
    if fits_tokens and (short_edge is None or min(natural) <= short_edge):
        return natural
    scale = 1.0
    if short_edge is not None and min(height, width) > short_edge:
        scale = short_edge / min(height, width)
    h, w = smart_resize(height * scale, width * scale, max_pixels=min(max_tokens * TOKEN_PIXELS, IMAGE_MAX_PIXELS))
    if short_edge is not None:
        # Rounding to 32 may overshoot a short_edge that is not a multiple of 32.
        while min(h, w) > short_edge:
            cand = (h - FACTOR, w) if h <= w else (h, w - FACTOR)
            if cand[0] * cand[1] < IMAGE_MIN_PIXELS:
                break
            h, w = cand
    # floor() in smart_resize can leave a thin image under the processor's minimum: widen its long side.
    while h * w < IMAGE_MIN_PIXELS:
        h, w = (h + FACTOR, w) if h >= w else (h, w + FACTOR)
    # max(32, ...) in smart_resize can leave a very thin image above the budget: trim its long side.
    while h * w > max_tokens * TOKEN_PIXELS:
        cand = (h - FACTOR, w) if h > w else (h, w - FACTOR)
        if min(cand) < FACTOR or cand[0] * cand[1] < IMAGE_MIN_PIXELS:
            break
        h, w = cand
    if not is_processor_size(h, w):
        # A very elongated image: flooring its short side can push the ratio past the processor's 200:1.
        # Keep a wider short side and trim the long side to the budget instead.
        tall = h > w
        short_max = min(natural) if short_edge is None else min(min(natural), short_edge)
        for short in range(min(h, w) + FACTOR, short_max + 1, FACTOR):
            long_side = (max_tokens * TOKEN_PIXELS // short) // FACTOR * FACTOR
            cand = (long_side, short) if tall else (short, long_side)
            if is_processor_size(*cand):
                h, w = cand
                break
    # The processor's minimum (65,536 pixels) can make tiny images cost more than a small budget.
    smaller = h * w < natural[0] * natural[1] and is_processor_size(h, w)
    return (h, w) if smaller else natural


def is_processor_size(height: int, width: int) -> bool:
    """Whether the processor's resize leaves this size unchanged."""
    try:
        return smart_resize(height, width) == (height, width)
    except AspectRatioError:
        return False


# ---------------------------------------------------------------------------------------------------------
# Video


@dataclass(frozen=True)
class VideoTokens:
    """What one video costs: ``groups`` frame pairs of ``tokens_per_group`` pads each, and a timestamp."""

    frames: int
    height: int
    width: int
    tokens_per_group: int
    timestamps: tuple[float, ...]

    @property
    def groups(self) -> int:
        return len(self.timestamps)

    @property
    def pad_tokens(self) -> int:
        return self.groups * self.tokens_per_group

    def timestamp_texts(self) -> list[str]:
        return [f"<{t:.1f} seconds>" for t in self.timestamps]


def sample_frame_indices(
    total_frames: int,
    video_fps: float | None,
    fps: float = VIDEO_FPS,
    min_frames: int = VIDEO_MIN_FRAMES,
    max_frames: int = VIDEO_MAX_FRAMES,
) -> list[int]:
    """Frame indices the video processor samples (``Qwen3VLVideoProcessor.sample_frames``)."""
    if total_frames <= 0:
        raise ValueError("video has no frames")
    video_fps = video_fps or 24.0
    n = int(total_frames / video_fps * fps)
    n = min(max(n, min_frames), max_frames, total_frames)
    if n == 1:
        return [0]
    step = (total_frames - 1) / (n - 1)
    # numpy.linspace(...).round(): half to even, like Python's round.
    return [round(i * step) if i < n - 1 else total_frames - 1 for i in range(n)]


def video_smart_resize(
    num_frames: int,
    height: float,
    width: float,
    factor: int = FACTOR,
    temporal_factor: int = TEMPORAL_PATCH_SIZE,
    min_pixels: int = VIDEO_MIN_PIXELS,
    max_pixels: int = VIDEO_MAX_PIXELS,
) -> tuple[int, int]:
    """The per-frame size of a clip: one pixel budget shared by all its frames."""
    if num_frames < temporal_factor:
        raise ValueError(f"a video needs at least {temporal_factor} frames")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    if max(height, width) / min(height, width) > MAX_ASPECT_RATIO:
        raise AspectRatioError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


def video_tokens(
    total_frames: int,
    video_fps: float | None,
    height: int,
    width: int,
    *,
    cap_pixels_per_frame: bool = False,
) -> VideoTokens:
    """Token cost of a video given its metadata (transformers 5.23.0 defaults: no per-frame cap)."""
    indices = sample_frame_indices(total_frames, video_fps)
    n = len(indices)
    if n < TEMPORAL_PATCH_SIZE:
        raise ValueError(f"a video needs at least {TEMPORAL_PATCH_SIZE} frames")
    max_pixels = VIDEO_MAX_PIXELS
    if cap_pixels_per_frame:
        frame_cap = VIDEO_MAX_TOKENS_PER_FRAME * TOKEN_PIXELS
        per_frame = max(min(frame_cap, VIDEO_MAX_PIXELS // n), int(VIDEO_MIN_PIXELS * 1.05))
        max_pixels = per_frame * n
    h, w = video_smart_resize(n, height, width, max_pixels=max_pixels)
    # Timestamps: frame pairs averaged; an odd count repeats the last frame (processor._calculate_timestamps).
    fps = video_fps or 24.0
    padded = indices + [indices[-1]] * (-n % TEMPORAL_PATCH_SIZE)
    seconds = [i / fps for i in padded]
    stamps = tuple(
        (seconds[i] + seconds[i + TEMPORAL_PATCH_SIZE - 1]) / 2 for i in range(0, len(seconds), TEMPORAL_PATCH_SIZE)
    )
    return VideoTokens(frames=n, height=h, width=w, tokens_per_group=h * w // TOKEN_PIXELS, timestamps=stamps)
