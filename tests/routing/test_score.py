"""score() and tier_for(): each weight's contribution, computed by hand from the defaults."""

from __future__ import annotations

import pytest

from frugalserve.routing.config import RoutingConfig, ScoreWeights
from frugalserve.routing.policy import Score, score, tier_for
from tests.routing.helpers import feats

W = ScoreWeights()


def test_plain_english_chat_scores_zero() -> None:
    assert score(feats(), W) == Score(0.0, ())


def test_each_feature_adds_its_documented_contribution_largest_first() -> None:
    s = score(
        feats(image_tokens=1200, images=4, text_tokens=8000, depth=6, max_tokens=1024, language="fr"),
        W,
    )
    expected = [
        ("long_prompt", 0.20 * 3),  # 8000 / 1000 = 8 = 3 doublings
        ("images", 0.15 * 3),  # three beyond the first
        ("image_tokens", 0.25 * 1.2),
        ("max_tokens", 0.12 * 2),  # 1024 / 256 = 4 = 2 doublings
        ("language", 0.15),
        ("depth", 0.05 * 2),  # 6 - 4
    ]
    assert [name for name, _ in s.contributions] == [name for name, _ in expected]
    assert [v for _, v in s.contributions] == pytest.approx([v for _, v in expected])
    assert s.value == pytest.approx(1.84)  # 0.60 + 0.45 + 0.30 + 0.24 + 0.15 + 0.10


def test_contributions_are_capped() -> None:
    s = dict(
        score(
            feats(image_tokens=50_000, images=20, videos=5, text_tokens=2000 * 2**12, depth=100, max_tokens=10**6), W
        ).contributions
    )
    assert s["image_tokens"] == pytest.approx(0.35)
    assert s["images"] == pytest.approx(0.45)  # 0.15 x 3 extra images at most
    assert s["video"] == pytest.approx(0.60)  # 0.30 x 2 videos at most
    assert s["long_prompt"] == pytest.approx(0.80)
    assert s["depth"] == pytest.approx(0.30)
    assert s["max_tokens"] == pytest.approx(0.60)


def test_text_signals_saturate_at_their_counts() -> None:
    one = dict(score(feats(code_blocks=1, math=1, reasoning=1), W).contributions)
    many = dict(score(feats(code_blocks=50, math=50, reasoning=50), W).contributions)
    assert one == pytest.approx({"code": 0.25 / 3, "math": 0.25 / 3, "reasoning": 0.25})  # reasoning full at 2
    assert many == pytest.approx({"code": 0.25, "math": 0.25, "reasoning": 0.50})


def test_tools_and_schema_and_strong_languages() -> None:
    assert score(feats(tools=True, json_schema=True, language="zh"), W).value == pytest.approx(0.35)  # 0.10 + 0.25
    assert score(feats(language="ar"), W).value == pytest.approx(0.15)


@pytest.mark.parametrize(
    ("value", "tier"), [(0.0, "S"), (0.1999, "S"), (0.20, "M"), (0.6999, "M"), (0.70, "L"), (9.0, "L")]
)
def test_thresholds_split_the_score_into_tiers(value: float, tier: str) -> None:
    assert tier_for(Score(value, ()), RoutingConfig()) == tier


def test_any_number_of_tiers() -> None:
    cfg = RoutingConfig(tiers=("xs", "s", "m", "l", "xl"), thresholds=(0.1, 0.2, 0.4, 0.8))
    assert [tier_for(Score(v, ()), cfg) for v in (0.05, 0.1, 0.3, 0.5, 1.0)] == ["xs", "s", "m", "l", "xl"]
