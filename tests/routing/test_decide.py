"""decide(): table tests with hand-computed values, one rule at a time (docs/routing.md, "decide").

Defaults unless a test says otherwise: tiers S < M < L, thresholds 0.20 / 0.70, slo_ms 2000, band
0.5-0.65, service_s 8, spill up, pools of capacity 4 at $3.60/h ($0.001 a second), linger 300 s.
"""

from __future__ import annotations

import dataclasses

import pytest

from frugalserve.errors import ContextLengthExceeded, InvalidRequest, PermissionDenied, ServiceUnavailable
from frugalserve.routing.config import RoutingConfig, TierObjective, WakeLimits
from frugalserve.routing.policy import REASONS, Route, decide, pin
from tests.routing.helpers import AT_L, LARGE, MEDIUM, SMALL, feats, pv, snap, warm3

CFG = RoutingConfig()


def cfg(**kw: object) -> RoutingConfig:
    return dataclasses.replace(CFG, **kw)  # type: ignore[arg-type]


def spill(rule: str) -> RoutingConfig:
    return cfg(per_tier=tuple(TierObjective(t, spill=rule) for t in ("S", "M", "L")))  # type: ignore[arg-type]


def summary(r: Route) -> tuple[str, str, str, str]:
    return r.pool, r.tier, r.action, r.reason


# -- the score's tier, served warm ---------------------------------------------------------------------


@pytest.mark.parametrize(("features", "pool"), [(SMALL, "s"), (MEDIUM, "m"), (LARGE, "l"), (AT_L, "l")])
def test_warm_tiers_serve_the_tier_the_score_asks_for(features: object, pool: str) -> None:
    r = decide(features, warm3(), CFG)  # type: ignore[arg-type]
    assert summary(r) == (pool, pool.upper(), "direct", "score")
    assert r.wanted == pool.upper() and r.wait_s == 0.0


def test_route_detail_is_one_line_with_tier_pool_score_action_reason_and_top_features() -> None:
    r = decide(LARGE, warm3(l={"state": "sleeping"}), spill("down"))
    # L asleep (30 s > 2 s), spill down to M, which is warm; reasoning 0.50 before code and math 0.25 each
    assert r.detail == "tier=M pool=m score=1.000 action=spilled reason=spill_down wanted=L top=reasoning,code,math"
    assert r.top_features == ("reasoning", "code", "math")


# -- exact fit ---------------------------------------------------------------------------------------


def test_prompt_plus_reserved_answer_over_the_small_cap_moves_up_to_the_next_tier() -> None:
    # S: 4000 + 512 reserved > 4096; M holds it
    r = decide(feats(prompt_tokens=4000), warm3(s={"context_tokens": 4096}), CFG)
    assert summary(r) == ("m", "M", "direct", "fit")


def test_requested_max_tokens_that_a_clamping_tier_would_cut_moves_up() -> None:
    # score 0.12 x log2(800 / 256) = 0.197: S, which would cut the answer to 512
    r = decide(feats(max_tokens=800), warm3(s={"max_new_tokens": 512}), CFG)
    assert summary(r) == ("m", "M", "direct", "fit")


def test_tier_whose_backend_would_answer_400_is_never_chosen_when_a_bigger_one_fits() -> None:
    s = {"max_new_tokens": 512, "clamps": False}  # max_tokens_policy: reject
    r = decide(feats(max_tokens=600), warm3(s=s), CFG)  # score 0.12 x log2(600 / 256) = 0.147: S
    assert summary(r) == ("m", "M", "direct", "fit")


def test_when_only_a_clamping_tier_remains_it_serves_with_a_shorter_answer() -> None:
    views = snap(pv("s", "S", max_new_tokens=512), pv("m", "M", max_new_tokens=512))
    assert summary(decide(feats(max_tokens=600), views, CFG)) == ("s", "S", "direct", "score")  # 0.147: S


def test_no_room_for_the_reserve_anywhere_still_fits_the_largest_context() -> None:
    views = snap(pv("s", "S", context_tokens=4096), pv("m", "M", context_tokens=8192))
    # 8000 + 512 > 8192 on both, but M has 192 tokens of room: grade "short" beats S's none
    assert summary(decide(feats(prompt_tokens=8000), views, CFG)) == ("m", "M", "direct", "fit")


def test_prompt_over_every_context_cap_names_messages() -> None:
    views = snap(pv("s", "S", context_tokens=4096), pv("m", "M", context_tokens=8192))
    with pytest.raises(ContextLengthExceeded) as err:
        decide(feats(prompt_tokens=8192), views, CFG)
    assert err.value.param == "messages" and "8192" in err.value.message


def test_max_tokens_no_tier_allows_names_max_tokens() -> None:
    views = snap(pv("s", "S", max_new_tokens=1024, clamps=False), pv("m", "M", context_tokens=4096, clamps=False))
    with pytest.raises(ContextLengthExceeded) as err:
        decide(feats(max_tokens=5000), views, CFG)
    assert err.value.param == "max_tokens"


def test_images_skip_a_text_only_tier() -> None:
    r = decide(feats(images=1, image_tokens=200), warm3(s={"modalities": ("text",)}), CFG)
    assert summary(r) == ("m", "M", "direct", "fit")


def test_too_many_images_for_a_tier_skip_it() -> None:
    r = decide(feats(images=2, image_tokens=100), warm3(s={"max_images": 1}), CFG)  # 0.25 x 0.1 + 0.15 = 0.175: S
    assert summary(r) == ("m", "M", "direct", "fit")


def test_fit_moves_down_only_when_no_bigger_tier_fits() -> None:
    views = warm3(m={"modalities": ("text",)}, l={"modalities": ("text",)})
    r = decide(feats(code_blocks=3, math=3, reasoning=2, videos=1, video_tokens=100), views, CFG)
    # score 1.00 + 0.30 (video) = 1.30 wants L; only S takes video
    assert summary(r) == ("s", "S", "direct", "fit")


def test_a_modality_no_tier_accepts_is_an_invalid_request_naming_messages() -> None:
    views = warm3(s={"modalities": ("text",)}, m={"modalities": ("text", "image")}, l={"modalities": ("text",)})
    with pytest.raises(InvalidRequest) as err:
        decide(feats(videos=1, video_tokens=300), views, CFG)
    assert err.value.param == "messages" and err.value.code == "modality_not_supported"


# -- hints, sessions, key tiers --------------------------------------------------------------------


def test_tier_hint_overrides_the_score() -> None:
    r = decide(feats(tier_hint="L"), warm3(), CFG)
    assert summary(r) == ("l", "L", "hinted", "hint")


def test_unknown_tier_hint_names_the_header() -> None:
    with pytest.raises(InvalidRequest) as err:
        decide(feats(tier_hint="XL"), warm3(), CFG)
    assert err.value.param == "x-frugalserve-tier"


def test_tier_hint_outside_the_keys_tiers_is_denied() -> None:
    with pytest.raises(PermissionDenied) as err:
        decide(feats(tier_hint="L"), warm3(), CFG, allowed_tiers=("S", "M"))
    assert err.value.param == "x-frugalserve-tier"


def test_session_lifts_a_simpler_follow_up_to_its_tier() -> None:
    assert summary(decide(SMALL, warm3(), CFG, session_tier="M")) == ("m", "M", "direct", "session")


def test_session_moves_up_when_the_request_needs_more() -> None:
    r = decide(LARGE, warm3(), CFG, session_tier="M")
    assert summary(r) == ("l", "L", "direct", "score")


def test_session_tier_is_a_floor_for_spilling_down() -> None:
    views = warm3(m={"state": "sleeping"})
    # M cold (30 s), spill down would pick S, but the conversation is on M: wake M instead
    r = decide(MEDIUM, views, spill("down"), session_tier="M")
    assert summary(r) == ("m", "M", "woke", "wake")


def test_keys_tiers_move_a_request_to_the_nearest_allowed_tier() -> None:
    r = decide(LARGE, warm3(), CFG, allowed_tiers=("S", "M"))
    assert summary(r) == ("m", "M", "direct", "key_tiers")


def test_no_pool_the_key_may_use_names_model() -> None:
    with pytest.raises(InvalidRequest) as err:
        decide(SMALL, warm3(), CFG, allowed_tiers=("XL",))
    assert err.value.param == "model"


def test_pools_without_a_tier_are_never_chosen() -> None:
    views = snap(pv("other", None), pv("m", "M"))
    assert decide(SMALL, views, CFG).pool == "m"


# -- warmth, load and cost ------------------------------------------------------------------------


def test_cold_tier_spills_up_to_a_warm_one() -> None:
    r = decide(MEDIUM, warm3(m={"state": "sleeping"}), CFG)  # wake 30 s > 2 s
    assert summary(r) == ("l", "L", "spilled", "spill_up") and r.wanted == "M"


def test_cold_tier_spills_down_when_its_rule_says_down() -> None:
    assert summary(decide(MEDIUM, warm3(m={"state": "sleeping"}), spill("down"))) == ("s", "S", "spilled", "spill_down")


def test_high_priority_never_spills_down() -> None:
    r = decide(feats(code_blocks=3, tools=True, priority="high"), warm3(m={"state": "sleeping"}), spill("down"))
    assert summary(r) == ("m", "M", "woke", "wake")


def test_spill_never_wakes_the_tier_and_says_what_the_wake_commits() -> None:
    r = decide(MEDIUM, warm3(m={"state": "sleeping"}), spill("never"))
    # (30 s wake + max(min_warm 0, linger 300)) x $0.001/s
    assert summary(r) == ("m", "M", "woke", "wake") and r.wake_usd == pytest.approx(0.33)
    assert r.wait_s == 30.0


def test_min_warm_s_counts_in_the_wake_cost() -> None:
    r = decide(MEDIUM, warm3(m={"state": "stopped", "min_warm_s": 600.0}), spill("never"))
    assert r.wake_usd == pytest.approx((30 + 600) * 0.001)


def test_fast_wake_within_the_objective_wakes_the_wanted_tier_rather_than_spill() -> None:
    r = decide(MEDIUM, warm3(m={"state": "sleeping", "eta_s": 1.5}), CFG)
    assert summary(r) == ("m", "M", "woke", "wake")


def test_start_already_under_way_within_the_objective_is_waited_for() -> None:
    r = decide(MEDIUM, warm3(m={"state": "waking", "eta_s": 1.5}), CFG)
    assert summary(r) == ("m", "M", "waited", "wait") and r.wake_usd == 0.0


def test_slow_start_under_way_spills_up_when_a_warm_tier_has_room() -> None:
    r = decide(MEDIUM, warm3(m={"state": "starting", "eta_s": 20.0}), CFG)
    assert summary(r) == ("l", "L", "spilled", "spill_up")


def test_slow_start_under_way_is_waited_for_when_spill_is_never() -> None:
    r = decide(MEDIUM, warm3(m={"state": "starting", "eta_s": 20.0}), spill("never"))
    assert summary(r) == ("m", "M", "waited", "wait") and r.wait_s == 20.0


def test_saturated_tier_within_its_objective_still_serves_directly() -> None:
    # 4 in flight on 4 slots: 1 ahead -> 1/4 x 8 s = 2.0 s = slo_ms
    r = decide(MEDIUM, warm3(m={"in_flight": 4}), CFG)
    assert summary(r) == ("m", "M", "direct", "score") and r.wait_s == 2.0


def test_saturated_tier_past_its_objective_spills_up_to_a_tier_inside_its_band() -> None:
    # M: 4 + 3 held + 1 - 4 = 4 ahead -> 8 s; L: (1 + 1) <= 0.65 x 4 = 2.6
    r = decide(MEDIUM, warm3(m={"in_flight": 4, "held": 3}, l={"in_flight": 1}), CFG)
    assert summary(r) == ("l", "L", "spilled", "spill_up")


def test_saturated_tier_waits_in_its_queue_when_the_spill_target_is_above_its_band() -> None:
    # L: (2 + 1) = 3 > 2.6
    r = decide(MEDIUM, warm3(m={"in_flight": 4, "held": 3}, l={"in_flight": 2}), CFG)
    assert summary(r) == ("m", "M", "waited", "wait") and r.wait_s == 8.0


def test_score_within_warm_margin_takes_the_warm_tier_below_over_waking() -> None:
    # score 0.70 is 0.00 above the L threshold (margin 0.05); L would wake in 1 s, within the objective
    r = decide(AT_L, warm3(l={"state": "sleeping", "eta_s": 1.0}), CFG)
    assert summary(r) == ("m", "M", "spilled", "margin") and r.wanted == "L"


def test_score_just_below_a_threshold_takes_the_warm_tier_above_even_when_spill_is_never() -> None:
    near_l = feats(reasoning=2, code_blocks=2)  # 0.50 + 0.25 x 2/3 = 0.667: M, 0.033 below L
    r = decide(near_l, warm3(m={"state": "sleeping"}), spill("never"))
    assert summary(r) == ("l", "L", "spilled", "margin") and r.wanted == "M"


def test_score_outside_warm_margin_wakes_its_tier() -> None:
    r = decide(AT_L, warm3(l={"state": "sleeping", "eta_s": 1.0}), cfg(warm_margin=0.0))
    assert summary(r) == ("l", "L", "woke", "wake")


def test_warm_margin_does_not_override_a_hint() -> None:
    r = decide(
        feats(tier_hint="L", reasoning=2, depth=8),
        warm3(l={"state": "sleeping", "eta_s": 1.0}),
        CFG,  # 0.70, as AT_L
    )
    assert summary(r) == ("l", "L", "woke", "wake")


def test_low_priority_never_wakes_a_tier_and_goes_to_a_warm_smaller_one_first() -> None:
    views = warm3(m={"state": "sleeping", "eta_s": 1.0})
    r = decide(feats(code_blocks=3, tools=True, priority="low"), views, spill("never"))
    assert summary(r) == ("s", "S", "spilled", "priority_low")


def test_low_priority_waits_for_a_start_someone_else_began() -> None:
    views = snap(pv("m", "M", "sleeping"), pv("l", "L", "starting", eta_s=10.0))
    r = decide(feats(code_blocks=3, tools=True, priority="low"), views, spill("never"))
    assert summary(r) == ("l", "L", "waited", "priority_low")


def test_low_priority_with_every_tier_asleep_is_refused_with_retry_after() -> None:
    views = snap(pv("s", "S", "sleeping", eta_s=2.0), pv("m", "M", "stopped"))
    with pytest.raises(ServiceUnavailable) as err:
        decide(feats(priority="low"), views, CFG)
    assert err.value.code == "wake_refused" and err.value.headers == {"Retry-After": "2"}


def test_wake_over_the_priority_limit_goes_to_a_warm_tier() -> None:
    # L: 8 GPUs at $4/h = $32/h; (120 s start + 600 s min_warm) x 32 / 3600 = $6.40 > $1.00
    big = {"state": "stopped", "eta_s": 120.0, "usd_per_hour": 32.0, "min_warm_s": 600.0}
    r = decide(LARGE, warm3(l=big), spill("never"))
    assert summary(r) == ("m", "M", "spilled", "wake_cost")


def test_wake_over_the_limit_with_nothing_warm_wakes_the_cheapest_pool_within_it() -> None:
    big = {"state": "stopped", "eta_s": 120.0, "usd_per_hour": 32.0, "min_warm_s": 600.0}
    views = warm3(s={"state": "sleeping", "eta_s": 30.0, "usd_per_hour": 0.8}, m={"state": "stopped"}, l=big)
    r = decide(LARGE, views, spill("never"))
    # S: (30 + 300) x 0.8 / 3600 = $0.0733; M: (30 + 300) x 3.6 / 3600 = $0.33
    assert summary(r) == ("s", "S", "woke", "wake_cost") and r.wake_usd == pytest.approx(330 * 0.8 / 3600)


def test_wake_over_every_limit_is_refused() -> None:
    views = snap(pv("l", "L", "stopped", usd_per_hour=32.0, min_warm_s=600.0))
    with pytest.raises(ServiceUnavailable, match=r"\$5\.60, over the limit \$1\.00"):
        decide(LARGE, views, CFG)  # (30 s start + max(600, 300)) x 32 / 3600 = $5.60


def test_high_priority_has_no_wake_limit_by_default() -> None:
    big = {"state": "stopped", "eta_s": 120.0, "usd_per_hour": 32.0, "min_warm_s": 600.0}
    r = decide(feats(code_blocks=3, math=3, reasoning=2, priority="high"), warm3(l=big), spill("never"))
    assert summary(r) == ("l", "L", "woke", "wake") and r.wake_usd == pytest.approx(6.4)


def test_reserved_pool_costs_nothing_to_wake() -> None:
    big = {"state": "stopped", "eta_s": 120.0, "usd_per_hour": 32.0, "min_warm_s": 600.0, "reserved": True}
    r = decide(LARGE, warm3(l=big), cfg(max_wake_usd=WakeLimits(normal=0.0)))
    assert summary(r) == ("l", "L", "woke", "wake") and r.wake_usd == 0.0


def test_pool_that_never_sleeps_is_charged_the_wake_horizon() -> None:
    no_limit = dataclasses.replace(spill("never"), max_wake_usd=WakeLimits(normal=None))
    r = decide(MEDIUM, warm3(m={"state": "stopped", "linger_s": None}), no_limit)
    assert r.wake_usd == pytest.approx((30 + 3600) * 0.001)


def test_within_a_tier_the_warm_pool_wins() -> None:
    views = snap(pv("m1", "M", "sleeping"), pv("m2", "M"), pv("l", "L"))
    assert summary(decide(MEDIUM, views, CFG)) == ("m2", "M", "direct", "score")


def test_within_a_tier_equal_pools_go_to_the_cheaper() -> None:
    views = snap(pv("m1", "M", usd_per_hour=5.0), pv("m2", "M", usd_per_hour=2.0))
    assert decide(MEDIUM, views, CFG).pool == "m2"


def test_every_reason_decide_returns_is_in_the_fixed_vocabulary() -> None:
    cases = [
        (MEDIUM, warm3(m={"state": "sleeping"}), CFG),
        (AT_L, warm3(l={"state": "sleeping", "eta_s": 1.0}), CFG),
        (feats(priority="low"), warm3(s={"state": "sleeping"}), CFG),
        (SMALL, warm3(s={"context_tokens": 100}), CFG),
    ]
    for features, views, c in cases:
        assert decide(features, views, c).reason in REASONS


def test_pinned_route_explains_a_named_model_the_same_way() -> None:
    r = pin(pv("l", "L"), MEDIUM, CFG.weights)
    assert summary(r) == ("l", "L", "pinned", "pinned")
    assert r.detail == "tier=L pool=l score=0.350 action=pinned reason=pinned top=code,tools"
