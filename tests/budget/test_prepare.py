from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from frugalserve.api import validate
from frugalserve.budget import counting, vision
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.images import PreprocessCache
from frugalserve.budget.limits import FetchLimits, ImageLimits, LimitsConfig
from frugalserve.budget.prepare import prepare_chat, prepare_completion
from frugalserve.errors import ContextLengthExceeded, InvalidRequest


def _data_url(w: int, h: int, color: tuple[int, int, int] = (0, 90, 200)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), color).save(buf, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _chat(*parts: dict[str, Any], max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "m",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": list(parts)}],
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def _img(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


@pytest.fixture
async def fetcher() -> Any:
    async with Fetcher(FetchLimits()) as f:
        yield f


async def test_screenshot_is_resized_and_the_count_is_exact(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "what is this?"}, _img(_data_url(1920, 1080)))
    p = await prepare_chat(body, LimitsConfig(), fetcher)
    sent = body["messages"][1]["content"][1]["image_url"]["url"]
    img = Image.open(io.BytesIO(base64.b64decode(sent.split(",", 1)[1])))
    pads = img.width * img.height // 1024
    assert vision.is_processor_size(img.height, img.width) and pads <= 1024
    assert p.image_tokens == pads + 2
    assert p.prompt_tokens == counting.count_chat(body["messages"], [pads]).total
    assert p.text_tokens == p.prompt_tokens - p.image_tokens
    assert p.image_tokens_saved == 2040 - pads
    assert p.images == 1 and p.images_resized == 1
    assert p.usage_details()["image_tokens"] == p.image_tokens
    # the response header says what changed, with the numbers above
    assert p.notes == [
        f"messages[1].content[1].image_url: resized from 1920x1080 to {img.width}x{img.height} "
        f"({2040 - pads} tokens saved)"
    ]


async def test_exact_duplicate_images_are_dropped(fetcher: Fetcher) -> None:
    url = _data_url(640, 480)
    body = _chat(_img(url), {"type": "text", "text": "and"}, _img(url))
    p = await prepare_chat(body, LimitsConfig(), fetcher)
    assert len(body["messages"][1]["content"]) == 2
    assert p.images == 1 and p.duplicates_dropped == 1
    assert p.image_tokens_saved == vision.image_tokens(480, 640)
    assert p.notes == [
        "messages[1].content[2].image_url: duplicate of messages[1].content[0].image_url dropped (302 tokens saved)"
    ]


async def test_preprocessing_cache_is_used_for_the_same_bytes(fetcher: Fetcher) -> None:
    cache = PreprocessCache(max_mb=8)
    url = _data_url(2000, 1000)
    await prepare_chat(_chat(_img(url)), LimitsConfig(), fetcher, cache)
    p = await prepare_chat(_chat(_img(url)), LimitsConfig(), fetcher, cache)
    assert p.cache_hits == 1 and len(cache) == 1


async def test_too_many_images_is_refused(fetcher: Fetcher) -> None:
    body = _chat(*(_img(_data_url(64, 64, (i, 0, 0))) for i in range(3)))
    with pytest.raises(InvalidRequest, match="at most 2"):
        await prepare_chat(body, LimitsConfig(image=ImageLimits(max_count=2)), fetcher)


async def test_visual_token_cap_is_enforced_after_resizing(fetcher: Fetcher) -> None:
    body = _chat(_img(_data_url(1600, 1200)), _img(_data_url(1600, 1201, (1, 2, 3))))
    with pytest.raises(InvalidRequest) as err:
        await prepare_chat(body, LimitsConfig(max_visual_tokens=1000), fetcher)
    assert err.value.code == "visual_tokens_exceeded"


async def test_corrupt_image_error_names_the_part(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "hi"}, _img("data:image/png;base64," + base64.b64encode(b"junk").decode()))
    with pytest.raises(InvalidRequest) as err:
        await prepare_chat(body, LimitsConfig(), fetcher)
    assert err.value.param == "messages[1].content[1].image_url"
    assert err.value.body()["error"]["type"] == "invalid_request_error"


async def test_refused_url_error_names_the_part(fetcher: Fetcher) -> None:
    with pytest.raises(InvalidRequest) as err:
        await prepare_chat(_chat(_img("http://127.0.0.1/x.png")), LimitsConfig(), fetcher)
    assert err.value.param == "messages[1].content[0].image_url"
    assert err.value.code == "invalid_image_url"


async def test_prompt_over_the_context_cap_is_refused_with_both_numbers(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "word " * 100})
    with pytest.raises(ContextLengthExceeded) as err:
        await prepare_chat(body, LimitsConfig(max_context_tokens=50), fetcher)
    assert "50" in err.value.message and str(counting.count_chat(body["messages"]).total) in err.value.message
    assert err.value.body()["error"]["code"] == "context_length_exceeded"


async def test_max_tokens_above_the_cap_is_clamped_and_reported(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "hi"}, max_tokens=4096)
    p = await prepare_chat(body, LimitsConfig(max_new_tokens=512), fetcher)
    assert body["max_tokens"] == 512 and p.max_tokens_clamped and p.max_tokens_requested == 4096
    assert p.notes == ["max_tokens clamped from 4096 to 512"]


async def test_max_tokens_above_the_cap_is_refused_by_policy(fetcher: Fetcher) -> None:
    with pytest.raises(InvalidRequest) as err:
        await prepare_chat(
            _chat({"type": "text", "text": "hi"}, max_tokens=4096),
            LimitsConfig(max_new_tokens=512, max_tokens_policy="reject"),
            fetcher,
        )
    assert err.value.param == "max_tokens"


async def test_missing_max_tokens_gets_the_cap(fetcher: Fetcher) -> None:
    body = _chat({"type": "text", "text": "hi"})
    p = await prepare_chat(body, LimitsConfig(max_new_tokens=256), fetcher)
    assert body["max_tokens"] == 256 and not p.max_tokens_clamped


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        (None, "messages"),
        ([], "messages"),
        (["x"], "messages[0]"),
        ([{"role": "user", "content": 3}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "audio"}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}], "messages[0].content[0].type"),
        ([{"role": "user", "content": [{"type": "image", "image": "x"}]}], "messages[0].content[0].type"),
        (
            [{"role": "user", "content": [{"type": "text", "text": "<|image_pad|>"}]}],
            "messages[0].content[0].text",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            "messages[0].content[0].image_url.url",
        ),
    ],
)
async def test_malformed_messages_name_the_parameter(fetcher: Fetcher, messages: Any, param: str) -> None:
    """As the gateway runs them: the shapes checked once (api/validate.py, with the parts a counted pool
    takes), then the budget stage."""
    body = {"model": "m", "messages": messages}
    with pytest.raises(InvalidRequest) as err:
        validate.chat(body)
        validate.messages(body, validate.COUNTED_PARTS)
        await prepare_chat(body, LimitsConfig(), fetcher)
    assert err.value.param == param


def test_a_pool_that_counts_nothing_takes_every_openai_part() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}
    validate.messages(body, validate.ALL_PARTS)


async def test_completion_prompts_are_counted_and_capped() -> None:
    p = await prepare_completion({"prompt": "hello world", "max_tokens": 100}, LimitsConfig(max_new_tokens=10))
    assert p.prompt_tokens == counting.count_text("hello world") and p.max_tokens == 10
    assert (await prepare_completion({"prompt": [1, 2, 3]}, LimitsConfig())).prompt_tokens == 3
    assert (await prepare_completion({"prompt": ["a", "b c"]}, LimitsConfig())).prompt_tokens == 1 + 2
    with pytest.raises(ContextLengthExceeded):
        await prepare_completion({"prompt": "x " * 50}, LimitsConfig(max_context_tokens=20))
    with pytest.raises(InvalidRequest):
        await prepare_completion({"prompt": {"no": 1}}, LimitsConfig())


@pytest.mark.parametrize("at", [0, 5, (1 << 20) - 3, 1 << 20, (1 << 21) + 7])
async def test_special_tokens_are_found_anywhere_in_a_long_text(fetcher: Fetcher, at: int) -> None:
    text = "a" * at + "<|vision_start|>" + "b" * 100
    with pytest.raises(InvalidRequest) as err:
        await prepare_chat({"messages": [{"role": "user", "content": text}]}, LimitsConfig(), fetcher)
    assert err.value.param == "messages[0].content" and "<|vision_start|>" in err.value.message
