"""The autoscaler's policy is pure: signals, a history and a time in, a count and its reason out.

Times are plain floats (a manual clock); expected counts are worked out by hand in the comments, with
capacity 10 and the default target 0.7 unless a test says otherwise.
"""

from __future__ import annotations

from dataclasses import replace

from frugalserve.lifecycle.autoscale import (
    Observation,
    ReplicaSignals,
    ScaleDecision,
    ScaleHistory,
    ScaleInput,
    desired_replicas,
    observe,
)
from frugalserve.lifecycle.config import AutoscaleConfig, ReplicasConfig

CFG = AutoscaleConfig()  # stable 60 s, panic 6 s, threshold 2, up x1000, down /2, cooldowns 0 / 30 s
WIDE = ReplicasConfig(min=0, max=100)


def rep(in_flight: int = 0, ready: bool = True, **kw: float | None) -> ReplicaSignals:
    return ReplicaSignals(f"r{in_flight}", ready, in_flight, **kw)  # type: ignore[arg-type]


def busy(n: int, in_flight: int) -> tuple[ReplicaSignals, ...]:
    return tuple(rep(in_flight) for _ in range(n))


def at(
    now: float,
    replicas: tuple[ReplicaSignals, ...],
    held: int = 0,
    bounds: ReplicasConfig = WIDE,
    floor: int = 0,
    capacity: int = 10,
) -> ScaleInput:
    return ScaleInput(now, capacity, replicas, held, bounds, floor)


def past(*points: tuple[float, float], **kw: object) -> ScaleHistory:
    """A history of (time, load) observations, all from the utilization signal."""
    return ScaleHistory(tuple(Observation(t, load, "utilization") for t, load in points), **kw)  # type: ignore[arg-type]


def decide(inp: ScaleInput, history: ScaleHistory = ScaleHistory(), cfg: AutoscaleConfig = CFG) -> ScaleDecision:
    d = desired_replicas(inp, history, cfg)
    assert "\n" not in d.reason and d.reason
    return d


# --- signals ---------------------------------------------------------------------------------------------


def test_each_replica_counts_its_largest_signal_and_held_requests_add_to_the_pool() -> None:
    replicas = (
        rep(5, running=3, waiting=5),  # in flight 0.5, upstream 0.8 -> 0.8
        rep(2, kv_cache_usage=0.81),  # in flight 0.2, kv 0.81 / 0.9 = 0.9 -> 0.9
        rep(3, ready=False, running=9, waiting=9),  # starting: 0
    )
    obs = observe(at(7, replicas, held=4), CFG)  # + held 4 / 10 = 0.4
    assert obs.time == 7
    assert abs(obs.load - 2.1) < 1e-9
    assert obs.signal == "kv_cache"  # 0.9 > upstream 0.8 > held 0.4


def test_upstream_waiting_raises_the_load_above_the_gateways_own_count() -> None:
    obs = observe(at(0, (rep(2, running=2, waiting=8),)), CFG)  # other clients: (2 + 8) / 10 = 1.0 > 0.2
    assert (obs.load, obs.signal) == (1.0, "upstream")
    # 1.0 / 0.7 -> 2 replicas, where the gateway's 0.2 alone wants 1
    assert decide(at(0, (rep(2, running=2, waiting=8),))).desired == 2


def test_kv_cache_raises_the_load() -> None:
    obs = observe(at(0, (rep(1, kv_cache_usage=0.45),)), CFG)  # 0.45 / 0.9 = 0.5 > 0.1
    assert (obs.load, obs.signal) == (0.5, "kv_cache")
    cfg = replace(CFG, kv_cache_target=0.5)  # 0.45 / 0.5 = 0.9 -> ceil(0.9 / 0.7) = 2
    assert decide(at(0, (rep(1, kv_cache_usage=0.45),)), cfg=cfg).desired == 2


def test_stale_telemetry_is_ignored() -> None:
    # waiting known but running not: no upstream signal; kv and gpu unknown
    stale = rep(6, running=None, waiting=10, kv_cache_usage=None, gpu_utilization=None)
    obs = observe(at(0, (stale,)), CFG)
    assert (obs.load, obs.signal) == (0.6, "utilization")


def test_equal_signals_go_to_the_first_in_the_documented_order() -> None:
    tied = rep(5, running=5, waiting=0, kv_cache_usage=0.45)  # 0.5 in flight, 0.5 upstream, 0.5 kv
    assert observe(at(0, (tied,)), CFG).signal == "utilization"
    assert observe(at(0, (rep(0, running=5, waiting=0, kv_cache_usage=0.45),)), CFG).signal == "upstream"


def test_held_requests_name_the_signal_when_they_dominate() -> None:
    obs = observe(at(0, busy(1, 5), held=8), CFG)  # 0.5 + 0.8
    assert (obs.load, obs.signal) == (1.3, "held")


def test_utilization_metric_ignores_gpu_duty_cycle() -> None:
    assert observe(at(0, (rep(1, gpu_utilization=0.95),)), CFG).load == 0.1


def test_gpu_metric_uses_the_duty_cycle_when_known() -> None:
    cfg = AutoscaleConfig(metric="gpu_utilization")
    obs = observe(at(0, (rep(3, gpu_utilization=0.9), rep(1, gpu_utilization=0.2))), cfg)  # 0.9 + 0.2
    assert abs(obs.load - 1.1) < 1e-9 and obs.signal == "gpu_utilization"


def test_gpu_metric_falls_back_to_utilization_and_says_so() -> None:
    cfg = AutoscaleConfig(metric="gpu_utilization")
    d = decide(at(0, busy(2, 9)), cfg=cfg)  # 1.8 / 0.7 = 2.57 -> 3
    assert (d.desired, d.signal) == (3, "utilization")
    assert "gpu_utilization unknown" in d.reason
    assert "gpu_utilization unknown" not in decide(at(0, (rep(9, gpu_utilization=0.5),)), cfg=cfg).reason


def test_concurrency_target_is_in_requests_per_replica() -> None:
    cfg = AutoscaleConfig(metric="concurrency", target=3, panic_threshold=100)  # 3 of capacity 10 = 0.3
    d = decide(at(0, busy(2, 5)), cfg=cfg)  # 1.0 / 0.3 = 3.33 -> 4
    assert (d.desired, d.action, d.signal) == (4, "scale_up", "concurrency")
    assert "3.00 requests/replica" in d.reason


# --- stable window ---------------------------------------------------------------------------------------


def test_stable_scale_up_averages_the_window() -> None:
    # at 58: (3.0 + 1.0 + 2.0) / 3 = 2.0 -> 2.0 / 0.7 = 2.86 -> 3; panic window: 2.0 -> 3 < 2 x 2
    d = decide(at(58, busy(2, 10)), past((0, 3.0), (30, 1.0)))
    assert (d.desired, d.current, d.action, d.signal, d.panic) == (3, 2, "scale_up", "utilization", False)
    assert abs(d.load - 2.0) < 1e-9
    assert d.reason == "utilization 2.00 replicas' worth over 60s (target 0.70/replica) wants 3; 2 now"
    assert d.history.last_up == 58 and d.history.last_change == 58
    assert [o.time for o in d.history.observations] == [0, 30, 58]


def test_observations_older_than_the_stable_window_are_dropped() -> None:
    # at 60 the load of 30 at time 0 is 60 s old: out. (0.7 + 0.7) / 2 = 0.7 -> exactly 1 replica
    d = decide(at(60, busy(1, 7)), past((0, 30.0), (1, 0.7)))
    assert [o.time for o in d.history.observations] == [1, 60]
    assert (d.desired, d.action) == (1, "hold")


def test_a_load_of_exactly_n_targets_wants_n_replicas() -> None:
    cfg = AutoscaleConfig(target=0.1)
    d = decide(at(0, busy(3, 1)), cfg=cfg)  # 0.1 + 0.1 + 0.1 = 0.30000000000000004 -> 3, not 4
    assert (d.desired, d.action) == (3, "hold")


def test_stable_scale_down() -> None:
    # 4 replicas, 1.0 throughout: 1.0 / 0.7 = 1.43 -> 2; halving allows 2
    d = decide(at(40, busy(2, 3) + busy(2, 2)), past((0, 1.0), (20, 1.0)))
    assert (d.desired, d.current, d.action, d.signal) == (2, 4, "scale_down", "utilization")
    assert d.history.last_change == 40 and d.history.last_up is None


def test_hold_leaves_the_change_times_alone() -> None:
    d = decide(at(50, busy(2, 5)), past(last_up=10.0, last_change=20.0))  # 1.0 -> 2
    assert d.action == "hold"
    assert (d.history.last_up, d.history.last_change) == (10.0, 20.0)


# --- panic -----------------------------------------------------------------------------------------------


def test_burst_enters_panic_and_follows_the_panic_window() -> None:
    # 1.0 every 10 s from 0 to 50, then at 56: 2 x 1.0 + held 40 / 10 = 6.0
    # panic window (50, 56]: 6.0 -> 6.0 / 0.7 = 8.57 -> 9 >= 2 x 2; stable (6 + 6) / 7 = 1.71 -> 3
    history = past(*((float(t), 1.0) for t in range(0, 51, 10)))
    d = decide(at(56, busy(2, 10), held=40), history)
    assert (d.desired, d.action, d.panic, d.entered_panic, d.signal) == (9, "scale_up", True, True, "held")
    assert d.load == 6.0
    assert d.reason == "panic: held 6.00 replicas' worth over 6s wants 9 (>= 2x 2 now)"
    assert d.history.panic_until == 116 and d.history.panic_peak == 9


def test_below_the_panic_threshold_the_stable_window_decides() -> None:
    # panic window 1.4 / 0.7 = 2, not more than 2 now: stable (1.4 + 1.4) / 2 -> 2
    d = decide(at(10, busy(2, 7)), past((0, 1.4)))
    assert not d.panic and (d.desired, d.action) == (2, "hold")
    # 3 wanted from 2 now is less than 2 x 2: no panic either
    d = decide(at(10, busy(2, 10)), past((0, 0.0)))  # panic window 2.0 -> 3; stable 1.0 -> 2
    assert not d.panic and (d.desired, d.action) == (2, "hold")


def test_panic_never_scales_down_and_ends_a_stable_window_after_the_burst() -> None:
    cfg = replace(CFG, max_scale_down_rate=100.0)
    nine = busy(2, 5) + tuple(rep(0, ready=False) for _ in range(7))
    history = past((56.0, 6.0), panic_until=116.0, panic_peak=9, last_up=56.0, last_change=56.0)
    # at 58: panic window (6.0 + 1.0) / 2 = 3.5 -> 5, below 2 x 9: no new burst, still in panic, keeps 9
    d = decide(at(58, nine), history, cfg)
    assert (d.desired, d.action, d.panic, d.entered_panic, d.left_panic) == (9, "hold", True, False, False)
    assert d.history.panic_until == 116 and d.history.panic_peak == 9
    # at 115: still in panic, the window holds 1.0 only -> 2, still 9
    d = decide(at(115, nine), d.history, cfg)
    assert (d.desired, d.panic) == (9, True)
    # at 116: panic over; stable window (56 is 60 s old) 58, 115, 116 all 1.0 -> 2
    d = decide(at(116, nine), d.history, cfg)
    assert (d.desired, d.action, d.panic, d.left_panic) == (2, "scale_down", False, True)
    assert d.history.panic_until is None and d.history.panic_peak == 0
    assert d.reason.startswith("panic over: utilization 1.00 replicas' worth over 60s")


def test_panic_keeps_its_peak_when_replicas_are_lost() -> None:
    # two of the nine failed: 7 now, panic window 1.0 -> 2, peak 9 kept
    history = past((100.0, 1.0), panic_until=150.0, panic_peak=9)
    d = decide(at(101, busy(5, 0) + busy(2, 5)), history)
    assert (d.desired, d.current, d.action, d.panic) == (9, 7, "scale_up", True)


def test_panic_keeps_the_replicas_it_has_beyond_its_peak() -> None:
    # the pool has 4 though the panic asked for 3 at most (the scaler got one more from elsewhere)
    history = past((100.0, 1.0), panic_until=150.0, panic_peak=3)
    d = decide(at(101, busy(4, 2)), history)  # panic window 0.8 -> 2
    assert (d.desired, d.action, d.panic) == (4, "hold", True)
    assert d.history.panic_peak == 4


def test_panic_needs_more_than_the_current_replicas() -> None:
    # with threshold 1, wanting the 2 the pool has is no burst
    d = decide(at(0, busy(2, 7)), cfg=replace(CFG, panic_threshold=1.0))  # 1.4 / 0.7 = 2
    assert (d.desired, d.panic) == (2, False)
    d = decide(at(0, busy(2, 8)), cfg=replace(CFG, panic_threshold=1.0))  # 1.6 / 0.7 = 2.29 -> 3
    assert (d.desired, d.panic, d.entered_panic) == (3, True, True)


def test_a_burst_during_panic_extends_it() -> None:
    history = past((96.0, 6.0), panic_until=150.0, panic_peak=9)
    d = decide(at(100, busy(9, 10), held=100), history)  # (6 + 19) / 2 = 12.5 -> 18 >= 2 x 9
    assert (d.desired, d.panic, d.entered_panic) == (18, True, False)
    assert d.history.panic_until == 160 and d.history.panic_peak == 18


# --- rates and cooldowns ---------------------------------------------------------------------------------


def test_scale_up_rate_limits_one_decision() -> None:
    cfg = replace(CFG, max_scale_up_rate=1.5, panic_threshold=100.0)
    d = decide(at(0, busy(2, 10), held=50), cfg=cfg)  # 7.0 -> 10, at most ceil(2 x 1.5) = 3
    assert (d.desired, d.action, d.signal) == (3, "scale_up", "rate")
    assert "rate: at most 3 (1.5x 2)" in d.reason
    d = decide(at(0, (), held=50), cfg=cfg)  # from zero: at most ceil(1 x 1.5) = 2
    assert (d.desired, d.signal) == (2, "rate")


def test_scale_up_rate_product_is_not_rounded_up_by_float_error() -> None:
    cfg = replace(CFG, max_scale_up_rate=2.2, panic_threshold=100.0)
    d = decide(at(0, busy(25, 10), held=1000), cfg=cfg)  # 25 x 2.2 = 55.00000000000001 -> 55
    assert (d.desired, d.signal) == (55, "rate")


def test_scale_down_rate_limits_one_decision() -> None:
    d = decide(at(0, busy(8, 0)))  # 0 wanted, at least floor(8 / 2) = 4
    assert (d.desired, d.action, d.signal) == (4, "scale_down", "rate")
    assert "rate: at least 4 (8 / 2)" in d.reason
    assert decide(at(0, busy(5, 0))).desired == 2  # floor(2.5)


def test_scale_up_cooldown() -> None:
    cfg = replace(CFG, scale_up_cooldown_s=20.0)
    history = past(last_up=100.0, last_change=100.0)
    d = decide(at(119, busy(2, 10)), history, cfg)  # 2.0 -> 3, held until 120
    assert (d.desired, d.action, d.signal) == (2, "hold", "cooldown")
    assert "cooldown: scale-up to 3 held 1s more" in d.reason
    assert d.history.last_up == 100
    d = decide(at(120, busy(2, 10)), history, cfg)
    assert (d.desired, d.action) == (3, "scale_up")


def test_scale_down_cooldown_runs_from_any_change() -> None:
    history = past(last_up=50.0, last_change=100.0)  # a scale-up at 50, a scale-down at 100
    d = decide(at(129, busy(4, 1)), history)  # 0.4 -> 1, at least 2; held until 130
    assert (d.desired, d.action, d.signal) == (4, "hold", "cooldown")
    d = decide(at(130, busy(4, 1)), history)
    assert (d.desired, d.action, d.signal) == (2, "scale_down", "rate")
    # the cooldown does not hold a scale-up
    assert decide(at(101, busy(4, 10)), history).action == "scale_up"


# --- hysteresis band -------------------------------------------------------------------------------------


def test_seed_001_gpu_band_holds_between_30_and_70_percent() -> None:
    cfg = AutoscaleConfig(
        metric="gpu_utilization", target=0.7, scale_in_below=0.3, stable_window_s=300, panic_window_s=30
    )

    def gpus(u: float) -> tuple[ReplicaSignals, ...]:
        return tuple(rep(0, gpu_utilization=u) for _ in range(3))

    # 35% each: 1.05 / 0.7 = 1.5 -> 2 would scale in; 0.35 >= 0.3 holds 3
    d = decide(at(0, gpus(0.35)), cfg=cfg)
    assert (d.desired, d.action, d.signal) == (3, "hold", "band")
    assert "band: 0.35/replica within 0.30-0.70 holds 3" in d.reason
    # 25% each: below the band -> 0.75 / 0.7 = 1.07 -> 2
    d = decide(at(0, gpus(0.25)), cfg=cfg)
    assert (d.desired, d.action, d.signal) == (2, "scale_down", "gpu_utilization")
    # 75% each: above the band -> 2.25 / 0.7 = 3.21 -> 4
    assert decide(at(0, gpus(0.75)), cfg=cfg).desired == 4
    # a short spike to 90% after 290 s at 50% is not 5 minutes above 70%:
    # (30 x 1.5 + 2.7) / 31 = 1.54 -> 0.51/replica, in the band; panic window (3 x 1.5 + 2.7) / 4 = 1.8 -> 3
    history = ScaleHistory(tuple(Observation(float(t), 1.5, "gpu_utilization") for t in range(0, 291, 10)))
    d = decide(at(295, gpus(0.9)), history, cfg)
    assert (d.desired, d.action, d.panic) == (3, "hold", False)


def test_seed_002_band_of_50_to_65_percent() -> None:
    cfg = AutoscaleConfig(target=0.65, scale_in_below=0.5)
    # 6 replicas at 50%: 3.0 / 0.65 = 4.6 -> 5 would scale in; the band holds 6
    assert (decide(at(0, busy(6, 5)), cfg=cfg).desired, decide(at(0, busy(6, 5)), cfg=cfg).signal) == (6, "band")
    # at 40%: 2.4 / 0.65 = 3.69 -> 4
    assert decide(at(0, busy(6, 4)), cfg=cfg).desired == 4
    # at 70%: 4.2 / 0.65 = 6.46 -> 7
    assert decide(at(0, busy(6, 7)), cfg=cfg).desired == 7


def test_no_band_means_the_stable_want_scales_in() -> None:
    assert decide(at(0, busy(6, 5)), cfg=AutoscaleConfig(target=0.65)).desired == 5


# --- bounds and zero -------------------------------------------------------------------------------------


def test_held_requests_start_a_replica_from_zero_at_once() -> None:
    cfg = replace(CFG, scale_up_cooldown_s=60.0)
    # a window of idle ticks and a scale-up cooldown, yet one held request starts one replica
    history = past(*((float(t), 0.0) for t in range(0, 100, 2)), last_up=99.0, last_change=99.0)
    d = decide(at(100, (), held=1), history, cfg)
    assert (d.desired, d.current, d.action, d.signal) == (1, 0, "scale_up", "held")
    assert "held: 1 waiting, one replica at once" in d.reason


def test_a_burst_at_zero_panics_for_more_than_one() -> None:
    # held 60: 6.0; panic window 96, 98, 100: (0 + 0 + 6) / 3 = 2.0 -> 2.86 -> 3 >= 2 x 1
    d = decide(at(100, (), held=60), past((96, 0.0), (98, 0.0)))
    assert (d.desired, d.action, d.panic, d.signal) == (3, "scale_up", True, "held")


def test_an_idle_pool_at_zero_stays_at_min() -> None:
    d = decide(at(0, ()))
    assert (d.desired, d.action) == (0, "hold")
    d = decide(at(0, (), bounds=ReplicasConfig(min=2, max=4)))
    assert (d.desired, d.action, d.signal) == (2, "scale_up", "min")


def test_a_pool_the_idle_ladder_took_to_zero_is_not_woken_by_its_remembered_load() -> None:
    # a busy window (2.0 replicas' worth for 60 s, panic until 130), then the ladder put the last replica
    # to sleep: at zero with nobody held, the remembered load must not bring one back
    history = past(*((float(t), 2.0) for t in range(42, 100, 2)), panic_until=130.0, panic_peak=3)
    d = decide(at(100, ()), history)
    assert (d.desired, d.current, d.action, d.panic, d.load) == (0, 0, "hold", False, 0.0)
    assert d.history.observations == (d.history.observations[-1],)  # the window starts afresh
    # the same history with one request held: one replica, at once
    d = decide(at(100, (), held=1), history)
    assert d.action == "scale_up" and d.desired >= 1


def test_the_policy_never_takes_the_last_replica_with_min_zero() -> None:
    cfg = replace(CFG, max_scale_down_rate=100.0)
    d = decide(at(0, busy(1, 0)), cfg=cfg)
    assert (d.desired, d.action, d.signal) == (1, "hold", "floor")
    assert "idle ladder" in d.reason
    d = decide(at(0, busy(3, 0)), cfg=cfg)  # 0 wanted, floor(3 / 100) = 0, keeps 1
    assert (d.desired, d.action, d.signal) == (1, "scale_down", "floor")


def test_min_and_max_bound_the_count() -> None:
    d = decide(at(0, busy(2, 10), held=30, bounds=ReplicasConfig(min=0, max=3)))  # 5.0 -> 8, max 3
    assert (d.desired, d.action, d.signal) == (3, "scale_up", "max")
    d = decide(at(0, busy(3, 0), bounds=ReplicasConfig(min=2, max=5)))  # 0 -> at least 2 by rate and min
    assert (d.desired, d.action) == (2, "scale_down")
    d = decide(at(0, busy(4, 0), bounds=ReplicasConfig(min=3, max=5)))  # rate allows 2, min 3
    assert (d.desired, d.signal) == (3, "min")
    # above max (the config shrank): down to max despite a cooldown
    d = decide(at(10, busy(5, 10), bounds=ReplicasConfig(min=0, max=3)), past(last_change=9.0))
    assert (d.desired, d.action, d.signal) == (3, "scale_down", "max")


def test_forecast_floor_raises_the_count_within_bounds() -> None:
    d = decide(at(0, busy(1, 0), floor=2))
    assert (d.desired, d.action, d.signal) == (2, "scale_up", "floor")
    assert "forecast wants 2" in d.reason
    d = decide(at(0, busy(1, 0), floor=9, bounds=ReplicasConfig(min=0, max=3)))
    assert (d.desired, d.signal) == (3, "floor")


def test_history_is_frozen_tuples_and_a_call_is_repeatable() -> None:
    history = past((0, 1.0))
    first = decide(at(2, busy(2, 5)), history)
    assert isinstance(first.history.observations, tuple)
    assert history.observations == (Observation(0, 1.0, "utilization"),)
    assert decide(at(2, busy(2, 5)), history) == first
