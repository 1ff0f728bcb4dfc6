from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from frugalserve.budget import vision

sizes = st.integers(min_value=1, max_value=20_000)


def test_full_hd_screenshot_costs_2040_pads() -> None:
    assert vision.image_pad_tokens(1080, 1920) == 2040
    assert vision.image_tokens(1080, 1920) == 2042


def test_smart_resize_rounds_half_to_even() -> None:
    # 48/32 = 1.5 rounds to 2, 80/32 = 2.5 rounds to 2 (banker's rounding), both then lifted to the minimum.
    assert vision.smart_resize(48 * 8, 80 * 8) == (384, 640)
    assert vision.smart_resize(16 * 33, 1000)[0] == 512


def test_extreme_aspect_ratio_is_refused() -> None:
    with pytest.raises(vision.AspectRatioError):
        vision.smart_resize(10, 2500)


@pytest.mark.engine
@settings(max_examples=300, deadline=None)
@given(h=sizes, w=sizes)
def test_image_pads_equal_transformers_image_processor(qwen3_vl_processor: Any, h: int, w: int) -> None:
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    if max(h, w) / min(h, w) > 200:
        with pytest.raises(vision.AspectRatioError):
            vision.smart_resize(h, w)
        return
    ours = vision.image_pad_tokens(h, w)
    theirs = qwen3_vl_processor.image_processor.get_number_of_image_patches(h, w, {}) // 4
    assert ours == theirs
    assert vision.smart_resize(h, w) == smart_resize(h, w, 32, 65536, 16777216)


@settings(max_examples=300, deadline=None)
@given(
    h=st.integers(32, 12_000),
    w=st.integers(32, 12_000),
    budget=st.integers(64, 4096),
    edge=st.integers(64, 2000),
)
def test_budget_size_is_a_fixed_point_within_budget(h: int, w: int, budget: int, edge: int) -> None:
    assume(max(h, w) / min(h, w) <= 200)  # beyond, smart_resize refuses (tested above)
    bh, bw = vision.budget_size(h, w, budget, edge)
    assert bh % 32 == 0 and bw % 32 == 0
    natural = vision.smart_resize(h, w)
    if natural[0] * natural[1] // 1024 <= budget and min(natural) <= edge:
        assert (bh, bw) == natural
    elif (bh, bw) != natural:
        # The image is resized to this; the server's resize leaves it alone, so the count stays exact.
        assert vision.is_processor_size(bh, bw)
        assert bh * bw // 1024 <= budget or (max(bh, bw) - 32) * min(bh, bw) < 65536
        assert bh * bw < natural[0] * natural[1]
    else:  # kept: already within the token budget, or at the processor's 65,536-pixel floor
        area = natural[0] * natural[1]
        assert area // 1024 <= budget or area >= h * w or (max(natural) - 32) * min(natural) < 65536


def test_budget_keeps_a_1920x1080_screenshot_under_1024_tokens_and_768_short_edge() -> None:
    h, w = vision.budget_size(1080, 1920, 1024, 768)
    assert min(h, w) <= 768
    assert h * w // 1024 <= 1024
    assert abs(w / h - 1920 / 1080) < 0.1


# ---------------------------------------------------------------------------------------------------------
# Video, against transformers' Qwen3VLVideoProcessor and Qwen3VLProcessor code


def _their_video(module: ModuleType, processor: Any, total: int, fps: float, h: int, w: int) -> tuple[Any, ...]:
    from transformers.video_utils import VideoMetadata

    cls = module.Qwen3VLVideoProcessor
    fake = SimpleNamespace(fps=2, min_frames=4, max_frames=768)
    meta = VideoMetadata(total_num_frames=total, fps=fps, width=w, height=h)
    indices = cls.sample_frames(fake, meta)
    n = len(indices)
    rh, rw = module.smart_resize(n, h, w, temporal_factor=2, factor=32, min_pixels=131072, max_pixels=786432)
    stamps = processor._calculate_timestamps(list(indices), fps, 2)
    return list(indices), (rh, rw), stamps


@pytest.mark.engine
@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(2, 20_000),
    fps=st.sampled_from([1.0, 10.0, 23.976, 24.0, 25.0, 29.97, 30.0, 60.0]),
    h=st.integers(16, 4000),
    w=st.integers(16, 4000),
)
def test_video_sampling_and_size_equal_transformers(
    qwen3_vl_video_module: ModuleType, qwen3_vl_processor: Any, total: int, fps: float, h: int, w: int
) -> None:
    assume(max(h, w) / min(h, w) <= 200)  # beyond, smart_resize refuses (tested above)
    indices, size, stamps = _their_video(qwen3_vl_video_module, qwen3_vl_processor, total, fps, h, w)
    assert vision.sample_frame_indices(total, fps) == indices
    assume(len(indices) >= 2)  # sizes and stamps are compared for clips of at least one frame pair
    ours = vision.video_tokens(total, fps, h, w)
    assert (ours.height, ours.width) == size
    assert list(ours.timestamps) == pytest.approx(stamps)
    assert ours.timestamp_texts() == [f"<{t:.1f} seconds>" for t in stamps]
