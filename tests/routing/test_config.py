"""The routing: section and the pool keys for routing: defaults and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from frugalserve import config as cfg
from frugalserve.routing.config import RoutingConfig

ROOT = Path(__file__).resolve().parents[2]
POOL = "{name: a, model: m, backend: {url: 'http://127.0.0.1:9'}"


def load(text: str) -> cfg.Config:
    return cfg.load_text(text)


def test_defaults_are_three_tiers_and_pools_without_a_tier() -> None:
    c = load(f"pools: [{POOL}}}]")
    assert c.routing.tiers == ("S", "M", "L") and c.routing.thresholds == (0.20, 0.70)
    assert c.pools[0].tier is None and c.pools[0].capacity == 16
    assert c.routing.objective("M").slo_ms == 2000.0 and c.routing.spill_rule("M") == "up"


def test_the_example_config_states_the_default_weights_and_thresholds() -> None:
    # The example is where users read the defaults: it must not drift from RoutingConfig().
    example = cfg.load_file(ROOT / "config.example.yaml").routing
    assert example.weights == RoutingConfig().weights
    assert example.thresholds == RoutingConfig().thresholds


def test_the_example_config_routes_three_tiers() -> None:
    c = cfg.load_file(ROOT / "config.example.yaml")
    assert {p.tier for p in c.pools if p.tier} == {"S", "M", "L"}
    assert c.routing.objective("L").utilisation == (0.5, 0.65)


def test_per_tier_objective_overrides_the_defaults_and_spill() -> None:
    c = load("routing: {spill: down, per_tier: [{tier: L, slo_ms: 5000, spill: never}]}")
    assert c.routing.objective("L").slo_ms == 5000 and c.routing.spill_rule("L") == "never"
    assert c.routing.spill_rule("S") == "down"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (f"pools: [{POOL}, tier: XL}}]", r"pools\[0\]\.tier: unknown tier 'XL'"),
        (f"pools: [{POOL}, capacity: 0}}]", r"pools\[0\]\.capacity: must be >= 1"),
        (f"pools: [{POOL}, modalities: [image]}}]", r"pools\[0\]\.modalities: must include 'text'"),
        (f"pools: [{POOL}, modalities: [text, audio]}}]", r"pools\[0\]\.modalities\[1\]: must be one of"),
        ("routing: {thresholds: [0.5]}", r"routing\.thresholds: must have 2 values"),
        ("routing: {thresholds: [0.5, 0.4]}", r"routing\.thresholds\[1\]: must be greater"),
        ("routing: {tiers: [S, S], thresholds: [0.5]}", r"routing\.tiers\[1\]: empty or duplicate"),
        ("routing: {tiers: []}", r"routing\.tiers: must list at least one tier"),
        ("routing: {per_tier: [{tier: XL}]}", r"routing\.per_tier\[0\]\.tier: unknown tier 'XL'"),
        ("routing: {per_tier: [{tier: S}, {tier: S}]}", r"routing\.per_tier\[1\]\.tier: tier 'S' is listed twice"),
        ("routing: {per_tier: [{tier: S, utilisation: [0.7, 0.5]}]}", r"routing\.per_tier\[0\]\.utilisation: must be"),
        ("routing: {per_tier: [{tier: S, slo_ms: 0}]}", r"routing\.per_tier\[0\]\.slo_ms: must be > 0"),
        ("routing: {per_tier: [{tier: S, spill: sideways}]}", r"routing\.per_tier\[0\]\.spill: must be one of"),
        ("routing: {weights: {code: -1}}", r"routing\.weights\.code: must be a finite number >= 0"),
        ("routing: {weights: {long_prompt_tokens: 0}}", r"routing\.weights\.long_prompt_tokens: must be >= 1"),
        ("routing: {warm_margin: -0.1}", r"routing\.warm_margin: must be >= 0"),
        ("routing: {reserve_new_tokens: 0}", r"routing\.reserve_new_tokens: must be >= 1"),
        ("routing: {max_wake_usd: {normal: -1}}", r"routing\.max_wake_usd\.normal: must be >= 0"),
        ("routing: {affinity: {load_factor: 0.9}}", r"routing\.affinity\.load_factor: must be >= 1"),
        ("routing: {sessions: {ttl_s: 0}}", r"routing\.sessions\.ttl_s: must be > 0"),
        ("routing: {cascade: {refusal_patterns: ['(']}}", r"routing\.cascade\.refusal_patterns\[0\]: not a regular"),
        ("routing: {cascade: {validator: xml}}", r"routing\.cascade\.validator: must be one of"),
        ("routing: {tierz: [S]}", r"routing\.tierz: unknown key"),
    ],
)
def test_routing_config_errors_name_the_key(text: str, key: str) -> None:
    with pytest.raises(cfg.ConfigError, match=key):
        load(text)


def test_pool_tier_must_be_one_of_the_configured_tiers() -> None:
    c = load(f"routing: {{tiers: [cheap, dear], thresholds: [0.5]}}\npools: [{POOL}, tier: dear}}]")
    assert c.pools[0].tier == "dear"
    with pytest.raises(cfg.ConfigError, match=r"pools\[0\]\.tier: unknown tier 'M' \(routing\.tiers: cheap, dear\)"):
        load(f"routing: {{tiers: [cheap, dear], thresholds: [0.5]}}\npools: [{POOL}, tier: M}}]")
