"""Which pool serves a request: pure functions of (features, pools snapshot, config). No I/O, no logging.

:func:`decide` takes three steps, each recorded in the :class:`Route` it returns:

1. **Tier wanted**: the score's tier (:func:`tier_for`), or the ``x-frugalserve-tier`` hint; a session's
   tier lifts it (a conversation only moves up).
2. **Fit**: only pools whose context cap holds the prompt plus the answer and that accept the request's
   modalities are eligible; the wanted tier moves up to the nearest eligible one (down only when no bigger
   one fits), and to a tier the API key may use.
3. **Warmth, load and cost**, in this order (docs/routing.md tells each rule with an example):
   direct (warm, meets ``slo_ms``) · margin (score near a threshold, a neighbour tier is warm) · wait for
   a start already under way · wake when that meets ``slo_ms`` · spill by the tier's ``spill`` rule ·
   wait in a saturated pool's queue · wake · a request that may not wake (low priority, cost over its
   limit) goes to any warm eligible tier, else wakes the cheapest pool within its limit, else 503.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from frugalserve.errors import ContextLengthExceeded, InvalidRequest, PermissionDenied, ServiceUnavailable
from frugalserve.routing.config import RoutingConfig, ScoreWeights
from frugalserve.routing.features import TIER_HEADER, Features
from frugalserve.routing.snapshot import COLD, COMING, PoolsSnapshot, PoolView

Action = Literal["direct", "spilled", "waited", "woke", "pinned", "hinted"]
# Every value Route.reason takes: a bounded label for /metrics.
REASONS = (
    "score",  # the score's tier, served warm
    "fit",  # moved to the nearest tier that holds the prompt and answer and accepts its modalities
    "hint",  # the x-frugalserve-tier header
    "session",  # the conversation's earlier tier (only up)
    "key_tiers",  # the nearest tier the API key may use
    "margin",  # score within warm_margin of a threshold: the warm neighbour tier instead of a wake
    "spill_up",  # the wanted tier was cold or saturated: a warm bigger tier
    "spill_down",  # the same, to a warm smaller tier (spill: down)
    "wait",  # waits for a start under way, or in a saturated pool's queue
    "wake",  # wakes or starts the wanted tier
    "priority_low",  # low priority does not wake a pool: served where something is warm
    "wake_cost",  # the wake would commit more than the priority's max_wake_usd
    "pinned",  # the client named a model
    "fallback",  # the pool chosen first failed before answering: the next eligible one (routing/retry.py)
    "cascade",  # the cascade's cheapest tier first, or the next one up after a flagged answer
)


@dataclass(frozen=True, slots=True)
class Score:
    value: float
    contributions: tuple[tuple[str, float], ...]  # non-zero ones, largest first


@dataclass(frozen=True, slots=True)
class Route:
    pool: str
    tier: str
    score: float
    top_features: tuple[str, ...]
    action: Action
    reason: str  # one of REASONS
    detail: str  # one line for the x-frugalserve-route header and the usage record
    wanted: str = ""  # the tier before warmth moved it: what a session remembers
    wait_s: float = 0.0  # expected wait for a replica
    wake_usd: float = 0.0  # what a wake commits (GPU-seconds x price), when it wakes


def score(features: Features, weights: ScoreWeights) -> Score:
    """The complexity score: the sum of each feature's weighted, capped contribution (docs/routing.md)."""
    f, w = features, weights
    parts: list[tuple[str, float]] = []
    if f.image_tokens:
        parts.append(("image_tokens", min(w.image_tokens_max, w.image_tokens_per_1k * f.image_tokens / 1000)))
    if f.images > 1:
        parts.append(("images", w.extra_image * min(f.images - 1, 3)))
    if f.videos:
        parts.append(("video", w.video * min(f.videos, 2)))
    if f.text_tokens > w.long_prompt_tokens:
        parts.append(
            ("long_prompt", min(w.long_prompt_max, w.long_prompt * math.log2(f.text_tokens / w.long_prompt_tokens)))
        )
    if f.code_blocks:
        parts.append(("code", w.code * min(1.0, f.code_blocks / 3)))
    if f.math:
        parts.append(("math", w.math * min(1.0, f.math / 3)))
    if f.reasoning:
        parts.append(("reasoning", w.reasoning * min(1.0, f.reasoning / 2)))
    if f.tools:
        parts.append(("tools", w.tools))
    if f.json_schema:
        parts.append(("json_schema", w.json_schema))
    if f.depth > w.depth_free:
        parts.append(("depth", min(w.depth_max, w.depth * (f.depth - w.depth_free))))
    if f.max_tokens is not None and f.max_tokens > w.max_tokens_free:
        parts.append(("max_tokens", min(w.max_tokens_max, w.max_tokens * math.log2(f.max_tokens / w.max_tokens_free))))
    if f.language not in w.strong_languages:
        parts.append(("language", w.language))
    parts = [p for p in parts if p[1] > 0]
    parts.sort(key=lambda p: -p[1])
    return Score(round(sum(v for _, v in parts), 6), tuple(parts))


def tier_for(score: Score, cfg: RoutingConfig) -> str:
    """The tier the score alone asks for: the first tier whose next threshold is above it."""
    i = 0
    for threshold in cfg.thresholds:
        if score.value < threshold:
            break
        i += 1
    return cfg.tiers[i]


# ---------------------------------------------------------------------------------------------------------
# decide


def decide(
    features: Features,
    snapshot: PoolsSnapshot,
    cfg: RoutingConfig,
    allowed_tiers: tuple[str, ...] | None = None,
    session_tier: str | None = None,
) -> Route:
    """The pool for a ``model: "auto"`` request (see the module docstring for the rules and their order).

    Raises :class:`ContextLengthExceeded` or :class:`InvalidRequest` (naming the parameter or header) when
    no tier can serve the request, :class:`PermissionDenied` for a hinted tier the key may not use, and
    :class:`ServiceUnavailable` when every eligible pool is cold and the request may not wake one.
    """
    sc = score(features, cfg.weights)
    top = tuple(name for name, _ in sc.contributions[:3])
    routed = [v for v in snapshot.pools if v.tier is not None and cfg.rank(v.tier) >= 0]
    if allowed_tiers is not None:
        routed = [v for v in routed if v.tier in allowed_tiers]
    if not routed:
        raise InvalidRequest(
            "no pool with a tier this API key may use serves model 'auto' (see pools[].tier)",
            param="model",
            code="no_tier",
        )
    fits = [(fit_grade(v, features, cfg), v) for v in routed]
    best_fit = max(grade for grade, _ in fits)
    if best_fit == 0:
        raise _no_fit(features, routed)
    eligible = [v for grade, v in fits if grade == best_fit]
    by_tier: dict[int, list[PoolView]] = {}
    for v in eligible:
        by_tier.setdefault(cfg.rank(_tier(v)), []).append(v)
    tiers = sorted(by_tier)

    # 1. The tier wanted.
    hint = features.tier_hint
    floor = -1  # a session's tier: nothing below it
    if hint is not None:
        if cfg.rank(hint) < 0:
            raise InvalidRequest(
                f"header {TIER_HEADER}: unknown tier {hint[:40]!r} (tiers: {', '.join(cfg.tiers)})",
                param=TIER_HEADER,
                code="invalid_value",
            )
        if allowed_tiers is not None and hint not in allowed_tiers:
            raise PermissionDenied(f"header {TIER_HEADER}: this API key may not use tier {hint!r}", param=TIER_HEADER)
        want, reason = cfg.rank(hint), "hint"
    else:
        want, reason = cfg.rank(tier_for(sc, cfg)), "score"
        if session_tier is not None and cfg.rank(session_tier) >= 0:
            floor = cfg.rank(session_tier)
            if floor > want:
                want, reason = floor, "session"
    # 2. Fit, and the tiers the key may use.
    if want not in by_tier:
        denied = allowed_tiers is not None and cfg.tiers[want] not in allowed_tiers
        want, reason = _nearest(want, tiers), "key_tiers" if denied else "fit"
        floor = min(floor, want)
    waits = {v.name: _wait_s(v, cfg) for v in eligible}
    for pools in by_tier.values():
        pools.sort(key=lambda v: (waits[v.name], v.usd_per_hour, v.name))
    return _warmth(features, sc, top, cfg, tiers, by_tier, waits, want, reason, floor)


def pin(view: PoolView, features: Features | None = None, weights: ScoreWeights | None = None) -> Route:
    """The route of a request that named its model: no choice made, explained the same way."""
    sc = score(features, weights) if features is not None and weights is not None else Score(0.0, ())
    top = tuple(name for name, _ in sc.contributions[:3])
    tier = view.tier or "-"
    return _route(view, tier, sc, top, "pinned", "pinned", tier, 0.0, 0.0)


def _warmth(
    f: Features,
    sc: Score,
    top: tuple[str, ...],
    cfg: RoutingConfig,
    tiers: list[int],
    by_tier: dict[int, list[PoolView]],
    waits: dict[str, float],
    want: int,
    reason: str,
    floor: int,
) -> Route:
    wanted = cfg.tiers[want]
    best = by_tier[want][0]

    def route(v: PoolView, action: Action, why: str, wake_usd: float = 0.0) -> Route:
        return _route(v, _tier(v), sc, top, action, why, wanted, waits[v.name], wake_usd)

    def meets(v: PoolView) -> bool:
        return waits[v.name] * 1000 <= cfg.objective(_tier(v)).slo_ms

    def spill_target(ranks: Iterable[int]) -> PoolView | None:
        for r in ranks:
            for v in by_tier.get(r, ()):
                if v.warm and meets(v) and _within_band(v, cfg):
                    return v
        return None

    # Direct: warm and within the objective.
    if best.warm and meets(best):
        return route(best, "hinted" if reason == "hint" else "direct", reason)
    # Margin: a score this close to a threshold takes the warm neighbour over waking this tier.
    if reason == "score" and not best.warm:
        for r in _margin_neighbours(sc.value, want, cfg):
            if r in by_tier and r >= floor and (v := spill_target((r,))) is not None:
                return route(v, "spilled", "margin")
    # A start already under way that meets the objective: wait for it, it is paid for.
    if best.state in COMING and meets(best):
        return route(best, "waited", "wait")
    limit = _wake_limit(f, cfg)
    cost = _wake_usd(best, cfg)
    may_wake = limit is not None and cost <= limit
    if best.state in COLD and meets(best) and may_wake:
        return route(best, "woke", "wake", cost)
    # Spill by the tier's rule.
    rule = cfg.spill_rule(wanted)
    if rule == "up":
        if (v := spill_target(r for r in tiers if r > want)) is not None:
            return route(v, "spilled", "spill_up")
    elif rule == "down" and f.priority != "high":
        if (v := spill_target(r for r in reversed(tiers) if floor <= r < want)) is not None:
            return route(v, "spilled", "spill_down")
    # Queue where the pool is warm or already coming up: costs no extra GPU time.
    if best.state not in COLD:
        return route(best, "waited", "wait")
    if may_wake:
        return route(best, "woke", "wake", cost)
    # This request may not wake its tier: anywhere warm (low priority: smaller first), then coming up.
    why = "priority_low" if f.priority == "low" else "wake_cost"
    order = _by_distance(want, [r for r in tiers if r >= floor], down_first=f.priority == "low")
    for states in (("ready", "external"), ("starting", "waking")):
        for r in order:
            for v in by_tier[r]:
                if v.state in states:
                    return route(v, "spilled" if states[0] == "ready" else "waited", why)
    wakes = sorted((_wake_usd(v, cfg), waits[v.name], v.name, v) for r in order for v in by_tier[r])
    if limit is not None and wakes[0][0] <= limit:
        return route(wakes[0][3], "woke", why, wakes[0][0])
    retry = str(max(1, math.ceil(min(w[1] for w in wakes))))
    if limit is None:
        message = "every pool that can serve this request is asleep, and low-priority requests do not wake one"
    else:
        message = (
            f"waking a pool for this request would commit at least ${wakes[0][0]:.2f}, over the limit ${limit:.2f}"
        )
    raise ServiceUnavailable(
        f"{message}. Retry in about {retry}s.", code="wake_refused", headers={"Retry-After": retry}
    )


def _route(
    v: PoolView,
    tier: str,
    sc: Score,
    top: tuple[str, ...],
    action: Action,
    reason: str,
    wanted: str,
    wait_s: float,
    wake_usd: float,
) -> Route:
    detail = f"tier={tier} pool={v.name} score={sc.value:.3f} action={action} reason={reason}"
    if wanted != tier:
        detail += f" wanted={wanted}"
    if wait_s > 0:
        detail += f" wait_s={wait_s:.1f}"
    if wake_usd > 0:
        detail += f" wake_usd={wake_usd:.4f}"
    if top:
        detail += f" top={','.join(top)}"
    return Route(v.name, tier, sc.value, top, action, reason, detail, wanted, wait_s, wake_usd)


# ---------------------------------------------------------------------------------------------------------
# the rules' arithmetic


def fit_grade(v: PoolView, f: Features, cfg: RoutingConfig) -> int:
    """2: serves the request as asked; 1: serves it with a shorter answer than asked or reserved
    (clamped); 0: its backend path would answer 400."""
    if not _accepts_media(v, f):
        return 0
    ctx = v.context_tokens
    if ctx is not None and f.prompt_tokens >= ctx:
        return 0  # no room for a single answer token
    room = None if ctx is None else ctx - f.prompt_tokens
    if f.max_tokens is None:  # the budget stage gives the answer whatever room is left
        want = cfg.reserve_new_tokens if v.max_new_tokens is None else min(cfg.reserve_new_tokens, v.max_new_tokens)
        return 2 if room is None or want <= room else 1
    cap = v.max_new_tokens if room is None else room if v.max_new_tokens is None else min(v.max_new_tokens, room)
    if cap is None or f.max_tokens <= cap:
        return 2
    return 1 if v.clamps else 0


def _accepts_media(v: PoolView, f: Features) -> bool:
    if f.images and ("image" not in v.modalities or (v.max_images is not None and f.images > v.max_images)):
        return False
    if f.videos and "video" not in v.modalities:
        return False
    return v.max_visual_tokens is None or f.image_tokens + f.video_tokens <= v.max_visual_tokens


def _no_fit(f: Features, pools: list[PoolView]) -> InvalidRequest:
    """Why no pool fits, naming the parameter to change."""
    accepting = [v for v in pools if _accepts_media(v, f)]
    if not accepting:
        return InvalidRequest(
            f"no tier accepts this request's images or videos ({f.images} images, {f.videos} videos, "
            f"{f.image_tokens + f.video_tokens} visual tokens)",
            param="messages",
            code="modality_not_supported",
        )
    unbounded = any(v.context_tokens is None for v in accepting)
    ctx = max(v.context_tokens or 0 for v in accepting)
    if not unbounded and f.prompt_tokens >= ctx:
        return ContextLengthExceeded(
            f"The largest context of any tier is {ctx} tokens. However, your prompt has {f.prompt_tokens} tokens. "
            "Please reduce the length of the messages or images.",
            param="messages",
        )
    return ContextLengthExceeded(
        f"max_tokens is {f.max_tokens}: more than any tier can answer after a prompt of {f.prompt_tokens} tokens "
        "(its max_new_tokens or its context). Please reduce max_tokens.",
        param="max_tokens",
    )


def _tier(v: PoolView) -> str:
    return v.tier or ""  # decide() only keeps pools with a tier


def _nearest(want: int, tiers: list[int]) -> int:
    """The smallest eligible tier above ``want`` (a bigger model never answers 400 where a smaller one
    would), else the biggest below."""
    above = [r for r in tiers if r > want]
    return above[0] if above else tiers[-1]


def _by_distance(want: int, tiers: list[int], down_first: bool) -> list[int]:
    side = -1 if down_first else 1
    return sorted(tiers, key=lambda r: (abs(r - want), 0 if (r - want) * side >= 0 else 1))


def _margin_neighbours(value: float, want: int, cfg: RoutingConfig) -> list[int]:
    """Tiers across a threshold within ``warm_margin`` of the score: the one below first (cheaper)."""
    out = []
    if want > 0 and value - cfg.thresholds[want - 1] < cfg.warm_margin:
        out.append(want - 1)
    if want < len(cfg.thresholds) and cfg.thresholds[want] - value < cfg.warm_margin:
        out.append(want + 1)
    return out


def _wait_s(v: PoolView, cfg: RoutingConfig) -> float:
    """Expected seconds before this request gets a replica: the start or wake still to go, plus the
    queue ahead of it beyond what the replicas serve at once, at the tier's typical request duration."""
    slots = v.slots()
    ahead = v.in_flight + v.held + 1 - slots
    queue = 0.0 if ahead <= 0 else ahead / slots * cfg.objective(_tier(v)).service_s
    return (0.0 if v.warm else v.eta_s) + queue


def _within_band(v: PoolView, cfg: RoutingConfig) -> bool:
    """Taking this request keeps the pool at or below the top of its tier's utilisation band."""
    high = cfg.objective(_tier(v)).utilisation[1]
    return (v.in_flight + v.held + 1) <= high * v.slots() + 1e-9


def _wake_usd(v: PoolView, cfg: RoutingConfig) -> float:
    """What waking ``v`` commits: the start or wake itself, then at least min_warm_s and the idle time
    before it sleeps again (wake_horizon_s for a pool that never does), at its price."""
    if v.state not in COLD or v.reserved:
        return 0.0
    linger = cfg.wake_horizon_s if v.linger_s is None else v.linger_s
    return (v.eta_s + max(v.min_warm_s, linger)) * v.usd_per_hour / 3600


def _wake_limit(f: Features, cfg: RoutingConfig) -> float | None:
    """The most this request may commit by waking a pool; None: it may not wake one."""
    if f.priority == "low":
        return None
    limit = cfg.max_wake_usd.high if f.priority == "high" else cfg.max_wake_usd.normal
    return math.inf if limit is None else limit
