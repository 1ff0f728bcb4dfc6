"""Malformed images are refused with ``invalid_image``, never another exception.

The cases (about 400, the same on every run) come from :mod:`tests.budget.hostile_images`. Each must give
a prepared image or an :class:`ImageError` through :func:`images.preprocess`, and an
:class:`InvalidRequest` with code ``invalid_image`` naming the part through :func:`prepare_chat`.
"""

from __future__ import annotations

import base64
from collections import Counter

import pytest
from tests.budget.hostile_images import CASES_PER_SEED, LIMITS, SEEDS, cases

from frugalserve.budget import images
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits, LimitsConfig
from frugalserve.budget.prepare import prepare_chat
from frugalserve.errors import InvalidRequest


def test_the_seed_files_are_valid_images() -> None:
    for name, data in SEEDS.items():
        out = images.preprocess(data, LIMITS)
        assert out.resized and out.pad_tokens < out.pad_tokens_before, name


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutated_images_give_an_image_or_an_image_error(name: str) -> None:
    outcomes: Counter[str] = Counter()
    for i, data in enumerate(cases(name)):
        try:
            out = images.preprocess(data, LIMITS)
        except images.ImageError as exc:
            assert str(exc), f"case {i}: empty message"
            assert " at 0x" not in str(exc), f"case {i}: a memory address in {exc}"
            outcomes["refused"] += 1
        else:
            assert out.data_url.startswith("data:image/"), f"case {i}"
            outcomes["prepared"] += 1
    # The mutations must reach the decoder: many are refused; some survive (a flipped pixel byte).
    assert outcomes["refused"] >= CASES_PER_SEED // 4, outcomes


@pytest.fixture
async def fetcher() -> object:
    async with Fetcher(FetchLimits()) as f:
        yield f


@pytest.mark.parametrize("name", ["gif", "tiff"])
async def test_mutated_images_in_a_chat_are_400_invalid_image_naming_the_part(name: str, fetcher: Fetcher) -> None:
    limits = LimitsConfig(image=LIMITS)
    refused = 0
    for data in cases(name)[-20:]:
        url = "data:image/gif;base64," + base64.b64encode(data).decode()
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": url}}],
                }
            ]
        }
        try:
            await prepare_chat(body, limits, fetcher)
        except InvalidRequest as exc:
            assert exc.status == 400 and exc.code == "invalid_image"
            assert exc.param == "messages[0].content[1].image_url"
            refused += 1
    assert refused >= 5
