"""lifecycle.idle: auto — the break-even choice of the idle ladder's thresholds, checked against expected-cost
tables worked out by hand and against a brute-force oracle, then live through a ManagedPool on a ManualClock."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.clock import ManualClock
from frugalserve.errors import ServiceUnavailable
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.config import IdleAutoConfig
from frugalserve.lifecycle.idle_auto import IdleCosts, IdleTuner, auto_thresholds, cheapest_threshold
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from tests.lifecycle.fakes import FakeProvisioner, advance, settle

FALLBACK = (300.0, 1800.0)


def costs(
    usd_per_s: float = 1.0,
    start_s: float = 10.0,
    wait: float = 1.0,
    *,
    wake_s: float = 2.0,
    can_sleep: bool = True,
    min_warm_s: float = 0.0,
    objective_s: float | None = None,
    shares_device: bool = False,
    device_share: float = 1.0,
) -> IdleCosts:
    return IdleCosts(
        usd_per_s=usd_per_s,
        start_s=start_s,
        wake_s=wake_s,
        can_sleep=can_sleep,
        min_warm_s=min_warm_s,
        usd_per_wait_s=wait,
        objective_s=objective_s,
        shares_device=shares_device,
        device_share=device_share,
    )


def decide(gaps: Sequence[float], c: IdleCosts, min_samples: int = 1):  # type: ignore[no-untyped-def]
    return auto_thresholds(gaps, c, FALLBACK, min_samples=min_samples)


# -- hand-computed tables --------------------------------------------------------------------------------
# $1/s, a 10 s start and $1 per waiting second: a cold start costs K = 10 x 1 (billed) + 10 x 1 (waiting) = $20.
# Cost of threshold θ over gaps g: sum(g for g <= θ) + (#g > θ) x (θ + 20).


def test_short_gaps_and_one_long_one_stop_after_the_short_ones() -> None:
    # gaps 10, 10, 10, 10, 300:
    #   θ = 0 (floor): 5 x (0 + 20)              = 100
    #   θ = 10:        40 + 1 x (10 + 20)        =  70   <- cheapest
    #   never:         340                       = 340
    t = decide([10, 300, 10, 10, 10], costs())
    assert t.stop_s == 10 and t.tuned and t.samples == 5
    assert t.reason.startswith("stop after 10 s: $14 per idle period (1 of 5 would end in a 10 s start), never: $68")


def test_the_cheapest_threshold_sits_between_gaps_of_different_lengths() -> None:
    # no waiting value: K = 10 x 1 = $10. gaps 1, 2, 50, 100:
    #   θ = 0:   4 x 10          = 40
    #   θ = 1:   1 + 3 x 11      = 34
    #   θ = 2:   3 + 2 x 12      = 27   <- cheapest
    #   θ = 50:  53 + 1 x 60     = 113
    #   never:   153
    t = decide([100, 1, 50, 2], costs(wait=0.0))
    assert t.stop_s == 2
    choice = cheapest_threshold([1, 2, 50, 100], 0.0, 1.0, 10.0)
    assert (choice.threshold, choice.usd_per_period, choice.cold, choice.never_usd) == (2, 27 / 4, 2, 153 / 4)


def test_never_stop_when_every_gap_is_shorter_than_a_start_is_worth() -> None:
    # gaps 3, 5, 8 (K = 20): θ = 0: 60; θ = 3: 3 + 2 x 23 = 49; θ = 5: 8 + 25 = 33; never: 16 <- cheapest
    t = decide([3, 5, 8], costs())
    assert t.stop_s is None
    assert t.reason.startswith("never stop: $5.333 per idle period (0 of 3")


def test_stop_at_once_when_every_gap_is_long() -> None:
    # gaps 1000, 2000, 5000 (K = 20): θ = 0: 3 x 20 = 60 <- cheapest; θ = 1000: 1000 + 2 x 1020 = 3040; never: 8000
    assert decide([1000, 2000, 5000], costs()).stop_s == 0
    # with min_warm_s 30 the floor is 30: 3 x (30 + 20) = 150, still far below the rest
    assert decide([1000, 2000, 5000], costs(min_warm_s=30)).stop_s == 30


def test_the_worked_example_of_docs_lifecycle_md() -> None:
    # $0.78/h, a 45 s start, $0.01 per waiting second: a start costs 45 x (0.78/3600 + 0.01) = $0.45975.
    # eight periods of 60 s, one of 1200, one of 7200: θ = 0: $4.5975; θ = 60: $1.0495 <-; θ = 1200: $1.08375;
    # never: $1.924. With a 2 s objective at most floor(0.5) = 0 may end in a start: never.
    gaps = [60.0] * 8 + [1200.0, 7200.0]
    t = decide(gaps, costs(0.78 / 3600, 45.0, 0.01))
    assert t.stop_s == 60
    assert t.reason.startswith(
        "stop after 60 s: $0.105 per idle period (2 of 10 would end in a 45 s start), never: $0.1924; idle $0.78/h"
    )
    assert decide(gaps, costs(0.78 / 3600, 45.0, 0.01, objective_s=2.0)).stop_s is None


def test_equal_costs_keep_the_longer_threshold() -> None:
    # gaps 5, 20, 25, 200 (K = 20): θ = 0: 80; θ = 5: 5 + 3 x 25 = 80 (tie: the longer, fewer cold starts);
    # θ = 20: 25 + 2 x 40 = 105; θ = 25: 50 + 45 = 95; never: 250
    assert decide([5, 20, 25, 200], costs()).stop_s == 5
    choice = cheapest_threshold([5, 20, 25, 200], 0.0, 1.0, 20.0)
    assert (choice.threshold, choice.unconstrained, choice.constrained) == (5, 5, False)


def test_an_objective_that_a_start_breaks_caps_cold_starts_at_5_percent() -> None:
    # 18 gaps of 10, one of 500, one of 1000 (K = 20); at most floor(5% x 20) = 1 may end in a start:
    #   θ = 0:    20 x 20                   =  400  (20 cold)
    #   θ = 10:   180 + 2 x (10 + 20)       =  240  (2 cold)  <- cheapest, but 10% of idle periods
    #   θ = 500:  680 + 1 x (500 + 20)      = 1200  (1 cold)  <- cheapest within 5%
    #   never:    1680
    gaps = [10.0] * 18 + [500.0, 1000.0]
    assert decide(gaps, costs()).stop_s == 10
    assert decide(gaps, costs(objective_s=20.0)).stop_s == 10  # a 10 s start keeps a 20 s objective: no cap
    t = decide(gaps, costs(objective_s=2.0))
    assert t.stop_s == 500
    assert "a 10 s start breaks the 2 s objective, so at most 5% may (cheapest otherwise: stop after 10 s)" in t.reason
    assert "$60 per idle period (1 of 20" in t.reason
    # with two long gaps of 1000 no finite threshold keeps to 1 cold start: never
    assert decide([10.0] * 18 + [1000.0, 1000.0], costs(objective_s=2.0)).stop_s is None


def test_a_higher_price_never_raises_the_threshold_and_a_longer_start_never_lowers_it() -> None:
    def key(x: float | None) -> float:
        return float("inf") if x is None else x

    rng = random.Random(7)
    for _ in range(40):
        gaps = [rng.expovariate(1 / rng.choice((5, 60, 600))) for _ in range(rng.randint(5, 60))]
        wait = rng.choice((0.0, 0.001, 0.01))
        by_price = [key(decide(gaps, costs(p, 45.0, wait)).stop_s) for p in (1e-5, 1e-4, 2.2e-4, 1e-3, 1e-2)]
        assert by_price == sorted(by_price, reverse=True), (gaps, wait, by_price)
        by_start = [key(decide(gaps, costs(2.2e-4, s, wait)).stop_s) for s in (1.0, 5.0, 30.0, 120.0, 600.0)]
        assert by_start == sorted(by_start), (gaps, wait, by_start)


def _direct_cost(gaps: Sequence[float], theta: float | None, c: float, k_usd: float) -> float:
    """The expected cost per idle period of one threshold, summed gap by gap (independent of the sweep)."""
    total = 0.0
    for g in gaps:
        total += g * c if theta is None or g <= theta else theta * c + k_usd
    return total / len(gaps)


def test_the_sweep_matches_a_brute_force_over_every_candidate() -> None:
    rng = random.Random(11)
    for _ in range(60):
        gaps = sorted(round(rng.expovariate(1 / 100), 1) for _ in range(rng.randint(1, 40)))
        c, k_usd, floor = rng.choice((0.1, 1.0)), rng.choice((1.0, 20.0, 300.0)), rng.choice((0.0, 15.0))
        choice = cheapest_threshold(gaps, floor, c, k_usd)
        candidates: list[float | None] = [None, floor, *(g for g in gaps if g > floor)]
        best = min(_direct_cost(gaps, t, c, k_usd) for t in candidates)
        assert choice.usd_per_period == pytest.approx(best, rel=1e-9)
        assert _direct_cost(gaps, choice.threshold, c, k_usd) == pytest.approx(best, rel=1e-9)
        assert choice.cold == sum(choice.threshold is not None and g > choice.threshold for g in gaps)


# -- sleep ---------------------------------------------------------------------------------------------


def test_no_sleep_on_a_device_no_other_pool_uses() -> None:
    t = decide([1, 1, 1, 1, 12, 12, 12, 12, 1000], costs())
    assert t.sleep_s is None
    assert "no sleep: a sleeping replica is billed like a ready one" in t.reason
    t = decide([1, 1, 1, 1, 12], costs(shares_device=True, can_sleep=False))
    assert t.sleep_s is None and "no sleep: the backend cannot sleep" in t.reason


def test_on_a_shared_device_sleep_by_the_same_rule_with_the_wake_and_the_share() -> None:
    # half the device ($0.5/s of memory), a 2 s wake at $1 per waiting second: K = 2 x 0.5 + 2 x 1 = $3.
    # gaps 1 x4, 12 x4, 1000.  Sleep:                      Stop (K = 20):
    #   θ = 0:  9 x 3                     = 27             9 x 20               = 180
    #   θ = 1:  0.5 x 4 + 5 x (0.5 + 3)   = 19.5  <-       4 + 5 x 21           = 109
    #   θ = 12: 0.5 x 52 + 1 x (6 + 3)    = 35             52 + 1 x 32          =  84  <-
    #   never:  0.5 x 1052                = 526            1052
    gaps = [1, 1, 1, 1, 12, 12, 12, 12, 1000]
    t = decide(gaps, costs(shares_device=True, device_share=0.5))
    assert (t.sleep_s, t.stop_s) == (1, 12)
    assert "sleep after 1 s: $2.167 per idle period (5 of 9 would end in a 2 s wake)" in t.reason


def test_a_sleep_at_or_after_the_stop_is_dropped() -> None:
    # gaps 1 x4, 300: sleep (K = 3): θ = 0: 15; θ = 1: 2 + 3.5 = 5.5 <-; never: 152.
    # stop (K = 20): θ = 0: 100; θ = 1: 4 + 21 = 25 <-; never: 304.  Sleep 1 is not before stop 1.
    t = decide([1, 1, 1, 1, 300], costs(shares_device=True, device_share=0.5))
    assert (t.sleep_s, t.stop_s) == (None, 1)
    assert "no sleep: the stop comes first (sleep after 1 s" in t.reason


def test_an_idle_second_that_costs_nothing_never_stops() -> None:
    t = decide([1000, 2000, 5000], costs(usd_per_s=0.0))
    assert t.stop_s is None and t.reason.startswith("never stop: an idle second costs nothing")


# -- samples and the tuner -------------------------------------------------------------------------------


def test_too_few_samples_keep_the_configured_thresholds() -> None:
    t = auto_thresholds([1000.0] * 29, costs(), (300.0, None), min_samples=30)
    assert (t.sleep_s, t.stop_s, t.samples, t.tuned) == (300.0, None, 29, False)
    assert t.reason == "configured thresholds (sleep 300 s, stop never): 29 idle periods measured, 30 needed"
    assert auto_thresholds([1000.0] * 30, costs(), (300.0, None), min_samples=30).stop_s == 0


def test_the_tuner_keeps_the_last_samples_and_decides_at_most_every_refresh() -> None:
    tuner = IdleTuner(IdleAutoConfig(min_samples=3, max_samples=4, refresh_s=60.0), FALLBACK)
    assert tuner.current is None
    for g in (3, 5, 8):  # all short: never stop (see above)
        tuner.record_gap(g)
    first = tuner.decide(100.0, costs())
    assert first.stop_s is None and tuner.decided_at == 100.0
    for g in (1000, 2000, 5000):  # the deque keeps 8, 1000, 2000, 5000
        tuner.record_gap(g)
    assert tuner.decide(159.0, costs()) is first  # within refresh_s
    assert tuner.gaps == (8, 1000, 2000, 5000)
    # 8, 1000, 2000, 5000: θ = 0: 80; θ = 8: 8 + 3 x 28 = 92; θ = 1000: 1008 + 2 x 1020 = 3048; never 8008
    again = tuner.decide(160.0, costs())
    assert again.stop_s == 0 and tuner.current is again and tuner.decided_at == 160.0


def test_idle_auto_settings_are_checked_and_errors_name_the_key() -> None:
    text = "pools: [{name: p, model: m, backend: {command: 'x {port}'}, lifecycle: {%s}}]"
    lc = cfg.load_text(text % "idle: auto, idle_auto: {min_samples: 5, refresh_s: 10}").pools[0].lifecycle
    assert (lc.idle, lc.idle_auto) == ("auto", IdleAutoConfig(min_samples=5, max_samples=2000, refresh_s=10.0))
    assert cfg.load_text(text % "").pools[0].lifecycle.idle == "manual"
    for bad, where in (
        ("idle: sometimes", "pools[0].lifecycle.idle: must be one of 'manual', 'auto'"),
        ("idle_auto: {min_samples: 0}", "pools[0].lifecycle.idle_auto.min_samples: must be >= 1"),
        (
            "idle_auto: {min_samples: 50, max_samples: 40}",
            "pools[0].lifecycle.idle_auto.max_samples: must be >= min_samples (50)",
        ),
        ("idle_auto: {refresh_s: 0}", "pools[0].lifecycle.idle_auto.refresh_s: must be > 0"),
    ):
        with pytest.raises(cfg.ConfigError) as err:
            cfg.load_text(text % bad)
        assert str(err.value).startswith(where), str(err.value)


# -- live: a ManagedPool tunes its own ladder --------------------------------------------------------------


async def _auto_pool(
    clock: ManualClock, prov: FakeProvisioner, refresh_s: float, health_interval_s: float = 10
) -> ManagedPool:
    """$3.6/h, idle: auto with 3 samples, configured ladder: stop after 1800 s; started, not yet used."""
    text = (
        "pools: [{name: p, model: m, backend: {command: 'x {port}'}, gpu: {usd_per_hour: 3.6}, "
        "lifecycle: {idle: auto, idle_sleep_s: null, idle_stop_s: 1800, min_warm_s: 20, "
        f"health_interval_s: {health_interval_s}, "
        f"idle_auto: {{min_samples: 3, refresh_s: {refresh_s}}}, predictive_prewarm: {{usd_per_waiting_s: 0}}}}}}]"
    )
    pool = ManagedPool(
        cfg.load_text(text).pools[0], lambda _n: prov, clock, RecentEvents(), LifecycleMetrics(CollectorRegistry())
    )
    await pool.start()
    return pool


async def _three_idle_periods_of_100_s(pool: ManagedPool, clock: ManualClock) -> None:
    first = await _acquire_while(pool, clock, 6.0)  # the cold start (5 s) is not an idle period
    first.release()
    for _ in range(3):
        await advance(clock, 100.0, step=5.0)
        lease = await pool.acquire()
        assert lease.waited_s == 0.0  # the configured 1800 s kept it up through each 100 s gap
        lease.release()
    assert pool.idle_tuner is not None and pool.idle_tuner.gaps == pytest.approx([100.0, 100.0, 100.0])


async def test_a_live_pool_stops_its_replica_at_the_tuned_threshold_not_the_configured_one() -> None:
    # $3.6/h = $0.001/s, a 5 s start, waiting worth nothing: K = 5 x 0.001 = $0.005. min_warm_s 20 is the floor.
    # Three idle periods of 100 s: θ = 20: 3 x (0.02 + 0.005) = $0.075 <- cheapest; never: 3 x 0.1 = $0.3.
    clock = ManualClock(1_700_000_000.0)
    prov = FakeProvisioner(clock, start_s=5.0)
    pool = await _auto_pool(clock, prov, refresh_s=1)
    try:
        idle = pool.describe()["idle"]
        assert (idle["mode"], idle["stop_s"], idle["samples"]) == ("auto", 1800, 0)
        assert idle["reason"].endswith("0 idle periods measured, 3 needed")
        await _three_idle_periods_of_100_s(pool, clock)  # the last release at t = 306
        await advance(clock, 19.0, step=0.5)
        assert pool.replica.state == "ready"
        await advance(clock, 2.0, step=0.5)
        assert pool.replica.state == "stopped" and prov.calls == ["start", "stop"]
        idle = pool.describe()["idle"]
        assert (idle["mode"], idle["sleep_s"], idle["stop_s"], idle["samples"]) == ("auto", None, 20, 3)
        assert idle["reason"].startswith("stop after 20 s: $0.025 per idle period (3 of 3 would end in a 5 s start)")
        assert idle["decided_at"] == pytest.approx(clock.wall(), abs=25.0)
        # the idle period is the pool's: it runs on while the replica is stopped, to the next arrival
        await advance(clock, 79.0, step=5.0)
        nxt = await _acquire_while(pool, clock, 6.0)
        nxt.release()
        assert pool.idle_tuner.gaps[-1] == pytest.approx(100.0, abs=0.6)
    finally:
        await pool.stop()


async def test_new_samples_are_decided_on_once_refresh_s_allows_and_the_idle_replica_re_arms() -> None:
    # refresh_s 150, and health probes too rare to ask the ladder in between (as for a sleeping replica).
    # Decisions: t = 0 (the owner's first timer, 0 samples); the pool, idle with a sample not yet decided on,
    # decides again when refresh_s allows: 150 (1 sample), 300 (2: the configured ladder still); the third
    # sample comes at 306. At 450 the pool decides (stop after 20 s, long past) and re-arms the idle replica,
    # instead of leaving it on the 1800 s timer it was armed with.
    clock = ManualClock(1_700_000_000.0)
    prov = FakeProvisioner(clock, start_s=5.0)
    pool = await _auto_pool(clock, prov, refresh_s=150, health_interval_s=1000)
    try:
        await _three_idle_periods_of_100_s(pool, clock)
        tuner = pool.idle_tuner
        assert tuner is not None and tuner.pending == 1
        due = tuner.due_at()
        assert due == pytest.approx(450.0)
        assert pool.describe_idle()["stop_s"] == 1800
        await advance(clock, due - 1 - clock.monotonic(), step=0.5)
        assert pool.replica.state == "ready"
        await advance(clock, 2.0, step=0.5)
        assert pool.replica.state == "stopped" and pool.describe_idle()["stop_s"] == 20
    finally:
        await pool.stop()


async def test_a_request_that_gives_up_waiting_leaves_the_pool_idle_from_then() -> None:
    text = (
        "pools: [{name: p, model: m, backend: {command: 'x {port}'}, "
        "lifecycle: {idle: auto, max_wait_s: 1, idle_auto: {min_samples: 3}}}]"
    )
    clock = ManualClock(1_700_000_000.0)
    prov = FakeProvisioner(clock, start_s=5.0)
    pool = ManagedPool(
        cfg.load_text(text).pools[0], lambda _n: prov, clock, RecentEvents(), LifecycleMetrics(CollectorRegistry())
    )
    await pool.start()
    try:
        with pytest.raises(ServiceUnavailable):
            await _acquire_while(pool, clock, 2.0)  # 503 at t = 1; the start goes on, ready at 5
        await advance(clock, 48.0, step=1.0)
        (await pool.acquire()).release()  # t = 50: an idle period from the 503 at t = 1
        assert pool.idle_tuner is not None and pool.idle_tuner.gaps == pytest.approx([49.0], abs=0.3)
    finally:
        await pool.stop()


async def test_a_manual_pool_describes_its_configured_ladder() -> None:
    text = "pools: [{name: p, model: m, backend: {command: 'x {port}'}, lifecycle: {idle_stop_s: 900}}]"
    clock = ManualClock()
    pool = ManagedPool(
        cfg.load_text(text).pools[0],
        lambda _n: FakeProvisioner(clock),
        clock,
        RecentEvents(),
        LifecycleMetrics(CollectorRegistry()),
    )
    assert pool.idle_tuner is None
    assert pool.describe()["idle"] == {
        "mode": "manual",
        "sleep_s": 300.0,
        "stop_s": 900.0,
        "reason": "configured (lifecycle.idle: manual)",
        "samples": None,
        "decided_at": None,
    }


async def _acquire_while(pool: ManagedPool, clock: ManualClock, seconds: float):  # type: ignore[no-untyped-def]
    pending = asyncio.ensure_future(pool.acquire())
    await settle()
    await advance(clock, seconds)
    return await pending
