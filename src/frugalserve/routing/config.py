"""The top-level ``routing:`` section: tiers, score weights, per-tier objectives, wake limits, sessions,
replica affinity and the cascade rule.

Parsed by :func:`frugalserve.config.parse` like every other section; defaults live here only. The reason
for each default is in docs/routing.md. This module imports nothing heavier than ``config_errors`` because
:mod:`frugalserve.config` imports it.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from typing import Literal

from frugalserve.config_errors import ConfigError

Spill = Literal["up", "down", "never"]


@dataclass(frozen=True)
class ScoreWeights:
    """How much each request feature adds to the complexity score (0 = none; tiers split it by thresholds).

    The defaults (with RoutingConfig.thresholds) were chosen on the tune split of the labelled routing set
    and checked on its holdout: docs/routing-evaluation.md, benchmarks/routing_tune.py."""

    image_tokens_per_1k: float = 0.25  # per 1,000 image tokens after resizing...
    image_tokens_max: float = 0.35  # ...up to this much
    extra_image: float = 0.15  # per image beyond the first (comparisons), up to 3 extra
    video: float = 0.30  # per video, up to 2
    long_prompt: float = 0.20  # per doubling of text tokens above long_prompt_tokens...
    long_prompt_tokens: int = 1000
    long_prompt_max: float = 0.80  # ...up to this much
    code: float = 0.25  # code present (3 fenced blocks or code-like lines give the full weight)
    math: float = 0.25  # math notation present (3 signals give the full weight)
    reasoning: float = 0.50  # the ask says prove, derive, debug, implement... (2 signals give the full weight)
    tools: float = 0.10  # tools or functions given
    json_schema: float = 0.25  # response_format json_schema
    depth: float = 0.05  # per message beyond depth_free...
    depth_free: int = 4
    depth_max: float = 0.30  # ...up to this much
    max_tokens: float = 0.12  # per doubling of the requested max_tokens above max_tokens_free...
    max_tokens_free: int = 256
    max_tokens_max: float = 0.60  # ...up to this much
    language: float = 0.15  # the text is in a language outside strong_languages
    strong_languages: tuple[str, ...] = ("en", "zh")  # languages the smallest tier handles as well as English

    def validate(self, path: str) -> None:
        for name, value in vars(self).items():
            if isinstance(value, float | int) and (not math.isfinite(value) or value < 0):
                raise ConfigError(f"{path}.{name}", "must be a finite number >= 0")
        for name in ("long_prompt_tokens", "max_tokens_free"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")


@dataclass(frozen=True)
class TierObjective:
    """One tier's latency objective and load target (tiers not listed get these defaults)."""

    tier: str
    slo_ms: float = 2000.0  # time to first token, P95 objective: the expected wait must stay below it
    utilisation: tuple[float, ...] = (0.5, 0.65)  # target band of in-flight / capacity; spills keep below the top
    spill: Spill | None = None  # when this tier is cold or saturated; null: routing.spill
    service_s: float = 8.0  # typical request duration, for the queue wait of a saturated pool

    def validate(self, path: str) -> None:
        if self.slo_ms <= 0:
            raise ConfigError(f"{path}.slo_ms", "must be > 0")
        if self.service_s <= 0:
            raise ConfigError(f"{path}.service_s", "must be > 0")
        band = self.utilisation
        if len(band) != 2 or not 0 < band[0] <= band[1] <= 1:
            raise ConfigError(f"{path}.utilisation", "must be [low, high] with 0 < low <= high <= 1")


@dataclass(frozen=True)
class WakeLimits:
    """The most a request of each priority may commit by waking a pool (USD); null = no limit. Low
    priority never wakes a pool."""

    normal: float | None = 1.0
    high: float | None = None

    def validate(self, path: str) -> None:
        for name in ("normal", "high"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0 (or null for no limit)")


@dataclass(frozen=True)
class SessionConfig:
    ttl_s: float = 1800.0  # a conversation silent this long forgets its tier
    max_entries: int = 100_000  # oldest forgotten first beyond this

    def validate(self, path: str) -> None:
        if self.ttl_s <= 0:
            raise ConfigError(f"{path}.ttl_s", "must be > 0")
        if self.max_entries < 1:
            raise ConfigError(f"{path}.max_entries", "must be >= 1")


@dataclass(frozen=True)
class AffinityConfig:
    """Replica choice inside a pool: consistent hashing with bounded load."""

    load_factor: float = 1.25  # a replica takes an affine request only below load_factor x the mean load
    virtual_nodes: int = 64  # points per replica on the hash ring (more: smoother split)

    def validate(self, path: str) -> None:
        if self.load_factor < 1:
            raise ConfigError(f"{path}.load_factor", "must be >= 1")
        if self.virtual_nodes < 1:
            raise ConfigError(f"{path}.virtual_nodes", "must be >= 1")


DEFAULT_REFUSALS = (
    r"^\s*(I'm sorry|I am sorry|Sorry),? (but )?I (can't|cannot|am unable|won't)",
    r"^\s*I (can't|cannot|am unable to|won't) (help|assist|answer|do|provide|comply)",
    r"^\s*As an AI( language model)?,? I",
)


@dataclass(frozen=True)
class CascadeConfig:
    """Try the cheapest eligible tier first, escalate a flagged answer (non-streaming requests only)."""

    enabled: bool = False
    on_length: bool = True  # finish_reason "length": the answer was cut off
    refusal_patterns: tuple[str, ...] = DEFAULT_REFUSALS  # regexes (case-insensitive) on the answer's start
    min_mean_logprob: float | None = -1.0  # when the backend returned logprobs; null: ignore them
    validator: Literal["none", "json"] = "none"  # json: the answer must parse as JSON

    def validate(self, path: str) -> None:
        for i, pattern in enumerate(self.refusal_patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{path}.refusal_patterns[{i}]", f"not a regular expression: {exc}") from None


@dataclass(frozen=True)
class RoutingConfig:
    """``model: "auto"``: the tier from the score, then fit, warmth, load and cost (docs/routing.md)."""

    tiers: tuple[str, ...] = ("S", "M", "L")  # smallest first
    thresholds: tuple[float, ...] = (0.20, 0.70)  # score at which each next tier starts
    warm_margin: float = 0.05  # a score this close to a threshold takes the warm side over a wake
    spill: Spill = "up"  # default rule when a tier is cold or saturated
    per_tier: tuple[TierObjective, ...] = ()
    weights: ScoreWeights = field(default_factory=ScoreWeights)
    reserve_new_tokens: int = 512  # room for the answer when the request gives no max_tokens
    max_wake_usd: WakeLimits = field(default_factory=WakeLimits)
    wake_horizon_s: float = 3600.0  # idle time charged to a wake of a pool that never sleeps
    sessions: SessionConfig = field(default_factory=SessionConfig)
    affinity: AffinityConfig = field(default_factory=AffinityConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)

    def validate(self, path: str) -> None:
        path = path or "routing"
        if not self.tiers:
            raise ConfigError(f"{path}.tiers", "must list at least one tier")
        for i, tier in enumerate(self.tiers):
            if not tier or tier in self.tiers[:i]:
                raise ConfigError(f"{path}.tiers[{i}]", f"empty or duplicate tier name {tier!r}")
        if len(self.thresholds) != len(self.tiers) - 1:
            raise ConfigError(
                f"{path}.thresholds",
                f"must have {len(self.tiers) - 1} values (one fewer than tiers), got {len(self.thresholds)}",
            )
        for i in range(1, len(self.thresholds)):
            if self.thresholds[i] <= self.thresholds[i - 1]:
                raise ConfigError(f"{path}.thresholds[{i}]", "must be greater than the one before")
        if self.warm_margin < 0:
            raise ConfigError(f"{path}.warm_margin", "must be >= 0")
        if self.reserve_new_tokens < 1:
            raise ConfigError(f"{path}.reserve_new_tokens", "must be >= 1")
        if self.wake_horizon_s <= 0:
            raise ConfigError(f"{path}.wake_horizon_s", "must be > 0")
        seen: set[str] = set()
        for i, objective in enumerate(self.per_tier):
            if objective.tier not in self.tiers:
                raise ConfigError(
                    f"{path}.per_tier[{i}].tier", f"unknown tier {objective.tier!r} (tiers: {', '.join(self.tiers)})"
                )
            if objective.tier in seen:
                raise ConfigError(f"{path}.per_tier[{i}].tier", f"tier {objective.tier!r} is listed twice")
            seen.add(objective.tier)

    def objective(self, tier: str) -> TierObjective:
        return self._objectives[tier]

    def spill_rule(self, tier: str) -> Spill:
        return self.objective(tier).spill or self.spill

    def rank(self, tier: str) -> int:
        """The tier's place, 0 for the smallest; -1 for a name that is not a tier."""
        return self._ranks.get(tier, -1)

    # Computed once per config: decide() runs per request.
    @functools.cached_property
    def _objectives(self) -> dict[str, TierObjective]:
        given = {o.tier: o for o in self.per_tier}
        return {t: given.get(t) or TierObjective(t) for t in self.tiers}

    @functools.cached_property
    def _ranks(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tiers)}
