"""The vision cache: LRU by bytes, keyed by pixels, splitting a batch of images into hits and misses."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from frugalserve.engine.vision_cache import VisionCache  # noqa: E402


class Encoder:
    """Stands in for Qwen3-VL's get_image_features: 4 patch rows -> 1 token of width 2."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, pixels, grid, **kw):
        self.calls.append(len(grid))
        sizes = (grid.prod(-1) // 4).tolist()
        pooled = pixels.reshape(-1, 4, 2).sum(1)
        return SimpleNamespace(
            pooler_output=torch.split(pooled, sizes), deepstack_features=[torch.split(pooled * 2, sizes)]
        )


def image(seed: float):
    return torch.full((8, 2), seed), torch.tensor([[1, 2, 4]])


def test_repeated_image_skips_the_encoder_and_gives_the_same_output() -> None:
    enc, cache = Encoder(), VisionCache(1)
    wrapped = cache.wrap(enc)
    (p1, g1), (p2, g2) = image(1.0), image(2.0)
    first = wrapped(torch.cat([p1, p2]), torch.cat([g1, g2]))
    again = wrapped(torch.cat([p2, p1]), torch.cat([g2, g1]))
    assert enc.calls == [2]  # the second call was all hits
    assert (cache.hits, cache.misses) == (2, 2)
    assert torch.equal(again.pooler_output[0], first.pooler_output[1])
    assert torch.equal(again.deepstack_features[0][1], first.deepstack_features[0][0])


def test_only_misses_go_to_the_encoder() -> None:
    enc, cache = Encoder(), VisionCache(1)
    wrapped = cache.wrap(enc)
    (p1, g1), (p2, g2) = image(1.0), image(2.0)
    wrapped(p1, g1)
    out = wrapped(torch.cat([p1, p2]), torch.cat([g1, g2]))
    assert enc.calls == [1, 1]
    assert len(out.pooler_output) == 2


def test_least_recently_used_entry_is_evicted_past_capacity() -> None:
    cache = VisionCache(64 / (1024 * 1024))  # 64 bytes: two entries of 2x2 floats x 2 tensors
    wrapped = cache.wrap(Encoder())
    for seed in (1.0, 2.0, 3.0):
        wrapped(*image(seed))
    assert len(cache) == 2 and cache.size <= 64
    wrapped(*image(1.0))
    assert cache.misses == 4  # image 1 had been evicted
