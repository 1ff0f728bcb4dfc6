"""The ``lifecycle:`` section of a pool: when a managed backend sleeps, stops, wakes and how requests wait.

Parsed by :func:`frugalserve.config.parse` like every other section; defaults live here only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from frugalserve.config_errors import ConfigError


@dataclass(frozen=True)
class LifecycleConfig:
    # The idle ladder. null disables a step. Idle = no request in flight and none ended for this long.
    # manual: the two thresholds below, as given. auto: the gateway chooses them from the idle periods it
    # measures (frugalserve.lifecycle.idle_auto); the two below apply until it has idle_auto.min_samples.
    idle: Literal["manual", "auto"] = "manual"
    idle_auto: IdleAutoConfig = field(default_factory=lambda: IdleAutoConfig())
    idle_sleep_s: float | None = 300.0  # → sleep (vLLM sleep API), or stop when the backend cannot sleep
    idle_stop_s: float | None = 1800.0  # → stop the process (frees CPU memory too)
    min_warm_s: float = 0.0  # after each start or wake, stay up at least this long (e.g. 600 when starts cost minutes)
    sleep_level: Literal[1, 2] = 1  # vLLM: 1 = weights to CPU memory (fast wake), 2 = weights dropped
    # Holding requests while the pool is cold.
    max_wait_s: float = 300.0  # longest a request waits for a replica; then 503 with Retry-After
    max_queue: int = 1000  # requests held at once; more get 503 at once
    keepalive_s: float = 1.0  # streaming requests: SSE comment ": waiting for a replica {status}" this often
    # Failure handling.
    health_interval_s: float = 10.0  # health probe of a ready replica; 3 failures in a row = failed
    restart_backoff_s: float = 1.0  # delay before the 2nd restart in a row; doubles each time
    restart_backoff_max_s: float = 60.0  # cap; a replica that stayed up this long resets the backoff
    # Prewarm: cron expressions ("minute hour day month weekday") in `timezone` that wake the pool.
    prewarm: tuple[str, ...] = ()
    timezone: str = "UTC"  # also the time of week predictive prewarm learns in
    # Prewarm learnt from traffic: wake or add replicas ahead of expected arrivals.
    predictive_prewarm: PredictivePrewarmConfig = field(default_factory=lambda: PredictivePrewarmConfig())

    def validate(self, path: str) -> None:
        for name in ("idle_sleep_s", "idle_stop_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0 (or null to disable)")
        for name in ("max_wait_s", "keepalive_s", "health_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        for name in ("min_warm_s", "restart_backoff_s", "restart_backoff_max_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")
        if self.max_queue < 1:
            raise ConfigError(f"{path}.max_queue", "must be >= 1")
        from frugalserve.lifecycle.cron import CronError, check_schedule, check_timezone

        try:
            check_timezone(self.timezone)
        except CronError as exc:
            raise ConfigError(f"{path}.timezone", str(exc)) from None
        for i, expr in enumerate(self.prewarm):
            try:
                check_schedule(expr)
            except CronError as exc:
                raise ConfigError(f"{path}.prewarm[{i}]", str(exc)) from None


@dataclass(frozen=True)
class IdleAutoConfig:
    """How ``idle: auto`` learns the idle ladder's thresholds (frugalserve.lifecycle.idle_auto). The price
    of a user's waiting second is ``predictive_prewarm.usd_per_waiting_s`` (one value for both rules)."""

    min_samples: int = 30  # idle periods measured before the tuned thresholds replace the configured ones
    max_samples: int = 2000  # the most recent idle periods the thresholds are chosen from
    refresh_s: float = 60.0  # choose again at most this often

    def validate(self, path: str) -> None:
        if self.min_samples < 1:
            raise ConfigError(f"{path}.min_samples", "must be >= 1")
        if self.max_samples < self.min_samples:
            raise ConfigError(f"{path}.max_samples", f"must be >= min_samples ({self.min_samples})")
        if self.refresh_s <= 0:
            raise ConfigError(f"{path}.refresh_s", "must be > 0")


@dataclass(frozen=True)
class ReplicasConfig:
    """How many replicas a managed pool may run. ``min: 0`` lets the pool scale to zero: its last replica
    follows the idle ladder (sleep, then stop). ``min: N`` keeps N replicas up, never put to sleep."""

    min: int = 0
    max: int = 1

    def validate(self, path: str) -> None:
        if self.min < 0:
            raise ConfigError(f"{path}.min", "must be >= 0")
        if self.max < 1:
            raise ConfigError(f"{path}.max", "must be >= 1")
        if self.min > self.max:
            raise ConfigError(f"{path}.min", f"must be <= max ({self.max}), got {self.min}")


@dataclass(frozen=True)
class AutoscaleConfig:
    """How many replicas a pool wants (frugalserve.lifecycle.autoscale), Knative-KPA style.

    Each replica's load is the largest of its signals, as a fraction of ``capacity``: requests in flight
    through the gateway, the requests its server says it runs and queues (``vllm:num_requests_running`` +
    ``vllm:num_requests_waiting``), its KV cache usage over ``kv_cache_target``, and with ``metric:
    gpu_utilization`` its GPUs' duty cycle. Requests held for a replica add to the pool's load. The pool
    wants ceil(load / target) replicas, averaged over the stable window, or over the panic window in a burst.
    """

    # utilization: a replica's load as a fraction of its capacity; concurrency: the same in requests per
    # replica; gpu_utilization: NVML's duty cycle of the pool's GPUs (falls back to utilization when unknown).
    metric: Literal["utilization", "concurrency", "gpu_utilization"] = "utilization"
    # Per replica, in the metric's unit: a fraction (default 0.7) or requests (default 0.7 x capacity).
    target: float | None = None
    # Hysteresis: hold the count while the per-replica load stays between this and target (seed 001's rule is
    # target 0.7, scale_in_below 0.3; a band of 50-65% is target 0.65, scale_in_below 0.5). null: none.
    scale_in_below: float | None = None
    kv_cache_target: float = 0.9  # a replica whose KV cache is this full counts as fully loaded
    stable_window_s: float = 60.0  # averaging window of normal decisions (KPA: 60 s)
    panic_window_s: float = 6.0  # a burst window (KPA: 10% of the stable window)
    panic_threshold: float = 2.0  # panic when the panic window wants this many times the current replicas
    max_scale_up_rate: float = 1000.0  # at most current x this per decision (KPA: 1000)
    max_scale_down_rate: float = 2.0  # at most current / this per decision (KPA: 2, i.e. halve)
    scale_up_cooldown_s: float = 0.0  # after a scale-up, no further scale-up for this long
    scale_down_cooldown_s: float = 30.0  # after any change, no scale-down for this long
    interval_s: float = 2.0  # how often the pool's autoscaler decides (KPA's tick: 2 s)

    def validate(self, path: str) -> None:
        if self.target is not None and self.target <= 0:
            raise ConfigError(f"{path}.target", "must be > 0")
        if self.metric != "concurrency" and self.target is not None and self.target > 1:
            raise ConfigError(f"{path}.target", f"a {self.metric} target is a fraction in (0, 1], got {self.target:g}")
        if self.scale_in_below is not None:
            if self.scale_in_below < 0:
                raise ConfigError(f"{path}.scale_in_below", "must be >= 0")
            target = self.target if self.target is not None else (None if self.metric == "concurrency" else 0.7)
            if target is not None and self.scale_in_below >= target:
                raise ConfigError(f"{path}.scale_in_below", f"must be below target ({target:g})")
        if not 0 < self.kv_cache_target <= 1:
            raise ConfigError(f"{path}.kv_cache_target", "must be in (0, 1]")
        for name in ("stable_window_s", "panic_window_s", "interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        if self.panic_window_s > self.stable_window_s:
            raise ConfigError(f"{path}.panic_window_s", "must not be longer than stable_window_s")
        if self.panic_threshold < 1:
            raise ConfigError(f"{path}.panic_threshold", "must be >= 1")
        for name in ("max_scale_up_rate", "max_scale_down_rate"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{path}.{name}", "must be >= 1")
        for name in ("scale_up_cooldown_s", "scale_down_cooldown_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")

    def target_fraction(self, capacity: int) -> float:
        """The target as a fraction of one replica's capacity, whatever the metric's unit."""
        if self.target is None:
            return 0.7
        return self.target / capacity if self.metric == "concurrency" else self.target

    def scale_in_fraction(self, capacity: int) -> float | None:
        if self.scale_in_below is None:
            return None
        return self.scale_in_below / capacity if self.metric == "concurrency" else self.scale_in_below


@dataclass(frozen=True)
class PredictivePrewarmConfig:
    """Wake (or add) replicas ahead of demand learnt from the usage records (frugalserve.lifecycle.prewarm)."""

    enabled: bool = False
    bucket_s: float = 900.0  # the time-of-week slot the arrival rate is learnt for (15 minutes)
    weeks: int = 4  # weeks of usage records learnt from; each slot's rate is the median over them
    min_weeks: int = 1  # learn nothing until this many whole weeks of records exist
    # What a second of a user waiting for a cold start is worth; prewarm when the expected waiting cost
    # exceeds the cost of idling the replica until the expected first arrival.
    usd_per_waiting_s: float = 0.01
    # Also prewarm when a cold start would break the tier's TTFT objective (routing.tiers.*.slo_ms) and an
    # arrival within the cold start is at least this likely. null: the cost rule alone.
    objective_probability: float | None = 0.5
    lead_s: float = 30.0  # be ready this long before the expected arrivals (on top of the measured start time)
    refresh_s: float = 3600.0  # re-learn from the records this often

    def validate(self, path: str) -> None:
        for name in ("bucket_s", "refresh_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        if 604800 % self.bucket_s:
            raise ConfigError(f"{path}.bucket_s", "must divide a week (604800 s) evenly, e.g. 300, 900 or 3600")
        if self.weeks < 1:
            raise ConfigError(f"{path}.weeks", "must be >= 1")
        if not 1 <= self.min_weeks <= self.weeks:
            raise ConfigError(f"{path}.min_weeks", f"must be between 1 and weeks ({self.weeks})")
        if self.usd_per_waiting_s < 0:
            raise ConfigError(f"{path}.usd_per_waiting_s", "must be >= 0")
        if self.objective_probability is not None and not 0 < self.objective_probability <= 1:
            raise ConfigError(f"{path}.objective_probability", "must be in (0, 1] (or null)")
        if self.lead_s < 0:
            raise ConfigError(f"{path}.lead_s", "must be >= 0")
