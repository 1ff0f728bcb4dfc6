from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from frugalserve.budget import counting, vision

texts = st.text(
    alphabet=st.one_of(st.characters(codec="utf-8", exclude_categories=("Cs",)), st.sampled_from(" \n\t")),
    max_size=40,
)
image_sizes = st.tuples(st.integers(16, 1400), st.integers(16, 1400)).filter(lambda s: max(s) / min(s) <= 200)
parts = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(lambda s: {"type": "image_url", "image_url": {"url": "x"}, "_size": s}, image_sizes),
)
contents = st.one_of(texts, st.lists(parts, min_size=1, max_size=4))
messages = st.lists(
    st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(["system", "user", "assistant"]), contents),
    min_size=1,
    max_size=4,
)


def _sizes(msgs: list[dict[str, Any]]) -> list[tuple[int, int]]:
    return [p["_size"] for m in msgs if isinstance(m["content"], list) for p in m["content"] if "_size" in p]


def test_text_only_chat_counts_template_and_text() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    # <|im_start|> user \n hi <|im_end|> \n <|im_start|> assistant \n
    assert counting.count_chat(msgs).total == 9


def test_special_token_strings_in_text_count_as_one_token() -> None:
    assert counting.count_text("<|im_end|>") == 1


def test_pad_count_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError):
        counting.count_chat([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}])


@pytest.mark.engine
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=messages, add_generation_prompt=st.booleans())
def test_chat_count_equals_transformers_processor(
    qwen3_vl_processor: Any, msgs: list[dict[str, Any]], add_generation_prompt: bool
) -> None:
    from PIL import Image

    sizes = _sizes(msgs)
    if any("<|" in (p.get("text") or "") for m in msgs if isinstance(m["content"], list) for p in m["content"]):
        return
    text = qwen3_vl_processor.apply_chat_template(msgs, add_generation_prompt=add_generation_prompt, tokenize=False)
    images = [Image.new("RGB", (w, h)) for h, w in sizes] or None
    ids = qwen3_vl_processor(text=[text], images=images, return_tensors="np")["input_ids"][0].tolist()
    count = counting.count_chat(msgs, [vision.image_pad_tokens(h, w) for h, w in sizes], (), add_generation_prompt)
    assert count.total == len(ids)
    assert count.image == ids.count(151655) + 2 * len(sizes)
    assert count.text == count.total - count.image


@pytest.mark.engine
def test_chat_with_tool_calls_equals_transformers_tokenizer(qwen3_vl_processor: Any) -> None:
    msgs = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "weather", "arguments": {"city": "Paris", "note": "été"}}}],
        },
        {"role": "tool", "content": "18°C"},
        {"role": "tool", "content": "sunny"},
    ]
    text = qwen3_vl_processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = qwen3_vl_processor.tokenizer(text)["input_ids"]
    assert counting.render_chat(msgs) == text
    assert counting.count_chat(msgs).total == len(ids)


@pytest.mark.engine
@pytest.mark.parametrize(
    ("frames", "fps", "h", "w"), [(48, 24.0, 480, 640), (301, 29.97, 720, 1280), (7, 30.0, 64, 64)]
)
def test_video_prompt_tokens_equal_processor_placeholder(
    qwen3_vl_processor: Any, frames: int, fps: float, h: int, w: int
) -> None:
    import numpy as np
    from transformers.video_utils import VideoMetadata

    v = vision.video_tokens(frames, fps, h, w)
    indices = np.array(vision.sample_frame_indices(frames, fps))
    meta = VideoMetadata(total_num_frames=frames, fps=fps, width=w, height=h, frames_indices=indices)
    inputs = {
        "video_grid_thw": [np.array([v.groups, v.height // 16, v.width // 16])],
        "video_metadata": [meta],
    }
    proc = qwen3_vl_processor
    fake_self = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
        _calculate_timestamps=proc._calculate_timestamps,
        vision_start_token=proc.vision_start_token,
        vision_end_token=proc.vision_end_token,
        video_token=proc.video_token,
    )
    placeholder = type(proc).replace_video_token(fake_self, inputs, 0)
    msgs = [
        {
            "role": "user",
            "content": [{"type": "video_url", "video_url": {"url": "x"}}, {"type": "text", "text": "?"}],
        }
    ]
    text = qwen3_vl_processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    ids = qwen3_vl_processor.tokenizer(text.replace("<|video_pad|>", placeholder))["input_ids"]
    count = counting.count_chat(msgs, (), [v])
    assert count.total == len(ids)
    assert count.video == counting.video_prompt_tokens(v)
