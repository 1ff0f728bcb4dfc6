"""Builders for routing tests: features and pool views with plain defaults, changed by keyword."""

from __future__ import annotations

from typing import Any

from frugalserve.routing.features import Features
from frugalserve.routing.snapshot import PoolsSnapshot, PoolView


def feats(**kw: Any) -> Features:
    base: dict[str, Any] = {
        "prompt_tokens": 100,
        "text_tokens": 100,
        "image_tokens": 0,
        "video_tokens": 0,
        "images": 0,
        "videos": 0,
        "max_tokens": None,
        "code_blocks": 0,
        "math": 0,
        "tools": False,
        "json_schema": False,
        "depth": 1,
        "language": "en",
        "tier_hint": None,
        "priority": "normal",
        "session": None,
    }
    base.update(kw)
    return Features(**base)


def pv(name: str, tier: str | None, state: str = "ready", **kw: Any) -> PoolView:
    base: dict[str, Any] = {
        "name": name,
        "tier": tier,
        "usd_per_hour": 3.6,  # $0.001 per second: costs read as seconds / 1000
        "reserved": False,
        "context_tokens": 32768,
        "max_new_tokens": None,
        "clamps": True,
        "max_images": None,
        "max_visual_tokens": None,
        "modalities": frozenset(("text", "image", "video")),
        "state": state,
        "replicas": 1,
        "ready_replicas": 1 if state in ("ready", "external") else 0,
        "in_flight": 0,
        "held": 0,
        "capacity": 4,
        "eta_s": 0.0 if state in ("ready", "external") else 30.0,
        "start_s": 30.0,
        "wake_s": 30.0,
        "min_warm_s": 0.0,
        "linger_s": 300.0,
    }
    if "modalities" in kw:
        kw["modalities"] = frozenset(kw["modalities"])
    base.update(kw)
    return PoolView(**base)


def snap(*views: PoolView, now: float = 0.0) -> PoolsSnapshot:
    return PoolsSnapshot(now, tuple(views))


def warm3(**overrides: dict[str, Any]) -> PoolsSnapshot:
    """Pools s, m, l of tiers S, M, L, all warm unless overridden (``m={"state": "sleeping"}``)."""
    return snap(*(pv(n, n.upper(), **overrides.get(n, {})) for n in ("s", "m", "l")))


# Features whose score lands on a known tier with the default weights and thresholds (0.20, 0.70).
SMALL = feats()  # 0.0
MEDIUM = feats(code_blocks=3, tools=True)  # code 0.25 + tools 0.10 = 0.35
LARGE = feats(code_blocks=3, math=3, reasoning=2)  # code 0.25 + math 0.25 + reasoning 0.50 = 1.00
AT_L = feats(reasoning=2, depth=8)  # reasoning 0.50 + depth 0.05 x (8 - 4) = 0.70: L, on the threshold
