"""Predictive prewarm is pure: counts per bucket in, rates per slot of the week out; a profile and a
pool's numbers in, a decision with its costs out. Expected values are worked out by hand in comments."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from frugalserve.lifecycle.config import PredictivePrewarmConfig
from frugalserve.lifecycle.prewarm import (
    WEEK_S,
    ArrivalProfile,
    PrewarmDecision,
    PrewarmInput,
    learn_profile,
    learning_window,
    prewarm_decision,
)

H = 3600.0
MON = datetime(2024, 9, 2, tzinfo=UTC).timestamp()  # Monday 2 September 2024 00:00 UTC
HOURLY = PredictivePrewarmConfig(enabled=True, bucket_s=H, weeks=4, min_weeks=1)
PARIS = ZoneInfo("Europe/Paris")


def at(week: int, day: int, hour: int) -> int:
    """The absolute index of the hourly bucket at ``hour`` of ``day`` (0: Monday) of week ``week`` after MON."""
    return int((MON + week * WEEK_S + day * 86400 + hour * H) // H)


def paris(*ymdh: int) -> float:
    return datetime(*ymdh, tzinfo=PARIS).timestamp()  # type: ignore[misc]


# -- learning --------------------------------------------------------------------------------------------


def test_a_slot_rate_is_the_median_of_its_weeks_so_one_odd_week_does_not_move_it() -> None:
    counts = {at(w, 0, 9): n for w, n in enumerate([12, 12, 300, 12])}  # Monday 09:00, a batch job once
    counts |= {at(w, 2, 14): n for w, n in enumerate([6, 0, 6, 6])}  # Wednesday 14:00, a holiday once
    counts |= {at(w, 4, 17): n for w, n in enumerate([1, 2, 3, 10])}  # Friday 17:00: median of 4 = (2+3)/2
    p = learn_profile(counts, 2.5, MON, MON + 4 * WEEK_S, "UTC", HOURLY)
    assert (p.weeks, p.weeks_of_records, p.mean_duration_s, len(p.rates)) == (4, 4, 2.5, 168)
    assert p.rates[9] == pytest.approx(12 / H)  # a mean would say 84 / H
    assert p.rates[2 * 24 + 14] == pytest.approx(6 / H)  # a mean would say 4.5 / H
    assert p.rates[4 * 24 + 17] == pytest.approx(2.5 / H)
    assert sum(1 for r in p.rates if r) == 3


def test_rate_at_is_the_rate_of_the_slot_of_the_week_a_time_falls_in() -> None:
    counts = {at(w, 0, 9): 12 for w in range(4)}
    p = learn_profile(counts, 0.0, MON, MON + 4 * WEEK_S, "UTC", HOURLY)
    monday = MON + 9 * WEEK_S  # five weeks after the records: any Monday is the same slot
    assert p.rate_at(monday + 9 * H) == pytest.approx(12 / H)  # 09:00:00, the slot's first second
    assert p.rate_at(monday + 9 * H + 3599.5) == pytest.approx(12 / H)
    assert p.rate_at(monday + 9 * H - 0.5) == 0.0  # 08:59:59.5
    assert p.rate_at(monday + 10 * H) == 0.0
    assert p.rate_at(monday + 7 * 86400 + 9 * H) == pytest.approx(12 / H)  # the next Monday


def test_only_the_last_weeks_before_the_current_bucket_are_learnt_from() -> None:
    cfg = replace(HOURLY, weeks=2)
    counts = {at(w, 0, 9): n for w, n in enumerate([100, 100, 5, 7])}
    counts[at(4, 0, 0)] = 50  # the bucket now is in (Monday 00:00-01:00): not over, not counted
    p = learn_profile(counts, 0.0, MON, MON + 4 * WEEK_S + 1800, "UTC", cfg)
    assert p.weeks == 2 and p.weeks_of_records == 4
    assert p.rates[9] == pytest.approx(6 / H)  # median of weeks 2 and 3: (5 + 7) / 2
    assert p.rates[0] == 0.0


def test_a_week_that_starts_before_the_first_record_is_not_learnt_from() -> None:
    # first record one second into week 1: week 1 is not whole; weeks 2 and 3 are
    counts = {at(1, 0, 9): 50, at(2, 0, 9): 4, at(3, 0, 9): 8}
    p = learn_profile(counts, 0.0, MON + WEEK_S + 1, MON + 4 * WEEK_S, "UTC", HOURLY)
    assert (p.weeks, p.weeks_of_records) == (2, 2)
    assert p.rates[9] == pytest.approx(6 / H)  # (4 + 8) / 2; with week 1, the median of [50, 4, 8] says 8


def test_fewer_whole_weeks_than_min_weeks_learns_nothing() -> None:
    counts = {at(w, 0, 9): 12 for w in range(4)}
    p = learn_profile(counts, 3.0, MON + 2 * WEEK_S, MON + 4 * WEEK_S, "UTC", replace(HOURLY, min_weeks=3))
    assert (p.weeks, p.weeks_of_records) == (0, 2)
    assert p.rates == (0.0,) * 168
    none = learn_profile({}, 0.0, None, MON, "UTC", HOURLY)
    assert (none.weeks, none.weeks_of_records, len(none.rates)) == (0, 0, 168)


def test_slots_are_local_wall_time_across_the_spring_change_of_daylight_saving_time() -> None:
    # Europe/Paris leaves CET (UTC+1) for CEST (UTC+2) on Sunday 31 March 2024 at 02:00. Tuesdays 09:00
    # local are 08:00 UTC on 26 March and 07:00 UTC on 2 April: both belong to the Tuesday 09:00 slot.
    assert paris(2024, 3, 26, 9) == datetime(2024, 3, 26, 8, tzinfo=UTC).timestamp()
    assert paris(2024, 4, 2, 9) == datetime(2024, 4, 2, 7, tzinfo=UTC).timestamp()
    counts = {int(paris(2024, 3, 26, 9) // H): 10, int(paris(2024, 4, 2, 9) // H): 20}
    now = paris(2024, 4, 3, 0)  # Wednesday: two weeks back reaches Tuesday 19 March 23:00 CET
    p = learn_profile(counts, 0.0, MON - 52 * WEEK_S, now, "Europe/Paris", replace(HOURLY, weeks=2))
    tuesday_9 = 24 + 9
    assert p.rates[tuesday_9] == pytest.approx(15 / H)  # median of [10, 20]
    assert p.rates[tuesday_9 - 1] == 0.0 and p.rates[tuesday_9 - 2] == 0.0  # where UTC would have put them
    assert p.rate_at(paris(2024, 4, 9, 9) + 1800) == pytest.approx(15 / H)  # Tuesday 9 April 09:30 CEST
    assert p.rate_at(datetime(2024, 4, 9, 8, 30, tzinfo=UTC).timestamp()) == 0.0  # 10:30 CEST


def test_in_the_week_of_the_change_a_slot_is_seen_twice_and_the_skipped_hour_never() -> None:
    # One week back from Monday 1 April 00:00 CEST (31 March 22:00 UTC) is 24 March 22:00 UTC = 23:00 CET:
    # the 168 hours cover Sunday 23:00 local twice (24 and 31 March) and Sunday 02:00 local never.
    sunday_23 = 6 * 24 + 23
    counts = {int(paris(2024, 3, 24, 23) // H): 4, int(paris(2024, 3, 31, 23) // H): 8}
    counts[int(datetime(2024, 3, 31, 1, tzinfo=UTC).timestamp() // H)] = 30  # 03:00 CEST, right after the jump
    now = paris(2024, 4, 1, 0)
    p = learn_profile(counts, 0.0, now - 10 * WEEK_S, now, "Europe/Paris", replace(HOURLY, weeks=1))
    assert p.rates[sunday_23] == pytest.approx(6 / H)  # median of [4, 8]
    assert p.rates[6 * 24 + 2] == 0.0  # no bucket started at 02:00 local that week
    assert p.rates[6 * 24 + 3] == pytest.approx(30 / H)


def test_learning_window_ends_at_the_last_bucket_boundary() -> None:
    assert learning_window(MON + 4 * WEEK_S + 1800, HOURLY) == (MON, MON + 4 * WEEK_S)


# -- deciding --------------------------------------------------------------------------------------------

DEFAULT = PredictivePrewarmConfig(enabled=True)  # lead_s 30, usd_per_waiting_s 0.01, objective_probability 0.5


def flat(rate: float, mean_duration_s: float = 30.0) -> ArrivalProfile:
    return ArrivalProfile(H, "UTC", (rate,) * 168, mean_duration_s, weeks=4, weeks_of_records=4)


def pool(**kw: object) -> PrewarmInput:
    base: dict[str, object] = {
        "now_wall": MON,
        "warm_replicas": 0,
        "cold_s": 20.0,
        "usd_per_hour": 3.6,  # $0.001 a second
        "linger_s": None,
        "capacity": 4,
        "target": 0.5,
        "objective_s": None,
    }
    return PrewarmInput(**(base | kw))  # type: ignore[arg-type]


def test_busy_slot_prewarms_as_many_replicas_as_littles_law_says_are_busy() -> None:
    # λ 0.1/s, cold 20 s, H = 50 s: n = 2, p = 1 - e^-5 = 0.993262053;
    # waiting p (20 + 2 x 20/2) = 39.7304821 s x $0.01 = $0.397304821;
    # idling (1 - e^-5) / 0.1 = 9.93262053 s x $0.001 = $0.00993262053;
    # replicas: 0.1/s x 30 s = 3 busy at once / (4 x 0.5) = 1.5 -> 2
    d = prewarm_decision(flat(0.1), pool(), DEFAULT)
    assert d.replicas == 2
    assert d.expected_arrivals == pytest.approx(5.0)  # 0.1/s x 50 s
    assert d.wait_cost_usd == pytest.approx(0.397304821)
    assert d.idle_cost_usd == pytest.approx(0.00993262053)
    assert "6/min" in d.reason and "prewarm 2" in d.reason and "waiting costs more than idling" in d.reason
    # no durations in the records (mean 0): Little's law says 0 busy, but the first arrival still needs one
    assert prewarm_decision(flat(0.1, mean_duration_s=0.0), pool(), DEFAULT).replicas == 1
    # already warm enough: the decision still says how many should be up (the scaler compares)
    assert prewarm_decision(flat(0.1), pool(warm_replicas=5), DEFAULT).replicas == 2


def test_one_arrival_an_hour_does_not_pay_for_idling() -> None:
    # λ = 1/3600: p = 1 - e^(-50/3600) = 0.0137928833; n = 20/3600;
    # waiting p (20 + 20/3600 x 10) = 0.276623936 s x $0.01 = $0.00276623936;
    # idling (M = min(50, linger 300) = 50) p / λ = 49.6543798 s x $0.001 = $0.0496543798
    d = prewarm_decision(flat(1 / 3600), pool(linger_s=300.0), DEFAULT)
    assert d.replicas == 0
    assert d.wait_cost_usd == pytest.approx(0.00276623936)
    assert d.idle_cost_usd == pytest.approx(0.0496543798)
    assert "no prewarm" in d.reason


def test_a_short_linger_bounds_the_idle_cost_and_can_tip_the_decision() -> None:
    # λ 0.01/s, H 50: p = 1 - e^-0.5 = 0.39346934; n = 0.2; waiting p x 22 s x $0.01 = $0.0865632549.
    # At $18/h ($0.005/s): linger 10 s idles (1 - e^-0.1) / 0.01 = 9.51625820 s = $0.0475812910 -> prewarm;
    # no linger idles (1 - e^-0.5) / 0.01 = 39.346934 s = $0.196734670 -> not
    lingering = prewarm_decision(flat(0.01), pool(usd_per_hour=18.0, linger_s=10.0), DEFAULT)
    assert lingering.wait_cost_usd == pytest.approx(0.0865632549)
    assert lingering.idle_cost_usd == pytest.approx(0.0475812910)
    assert lingering.replicas == 1  # 0.01 x 30 / 2 = 0.15 busy: at least one
    staying = prewarm_decision(flat(0.01), pool(usd_per_hour=18.0), DEFAULT)
    assert staying.idle_cost_usd == pytest.approx(0.196734670)
    assert staying.replicas == 0


def test_no_arrivals_expected_costs_idling_for_the_horizon_or_the_linger() -> None:
    d = prewarm_decision(flat(0.0), pool(), DEFAULT)
    assert (d.replicas, d.expected_arrivals, d.wait_cost_usd) == (0, 0.0, 0.0)
    assert d.idle_cost_usd == pytest.approx(0.05)  # 50 s x $0.001
    assert prewarm_decision(flat(0.0), pool(linger_s=10.0), DEFAULT).idle_cost_usd == pytest.approx(0.01)
    free = prewarm_decision(flat(0.0), pool(usd_per_hour=0.0), DEFAULT)  # nothing to gain, nothing to lose
    assert (free.replicas, free.wait_cost_usd, free.idle_cost_usd) == (0, 0.0, 0.0)


def test_a_cold_start_that_breaks_the_objective_prewarms_when_an_arrival_is_likely_enough() -> None:
    # λ 0.02/s, H 50: p = 1 - e^-1 = 0.632; waiting is worth nothing here, so only the objective can decide
    cfg = replace(DEFAULT, usd_per_waiting_s=0.0)
    d = prewarm_decision(flat(0.02), pool(objective_s=2.0), cfg)
    assert d.replicas == 1 and d.wait_cost_usd == 0.0
    assert "objective" in d.reason and "waiting costs more" not in d.reason
    assert prewarm_decision(flat(0.02), pool(objective_s=2.0), replace(cfg, objective_probability=0.7)).replicas == 0
    assert prewarm_decision(flat(0.02), pool(objective_s=2.0), replace(cfg, objective_probability=None)).replicas == 0
    assert prewarm_decision(flat(0.02), pool(objective_s=None), cfg).replicas == 0
    assert prewarm_decision(flat(0.02), pool(objective_s=20.0), cfg).replicas == 0  # a 20 s start meets 20 s


def test_the_rate_is_read_where_a_replica_woken_now_would_be_ready() -> None:
    rates = [0.0] * 168
    rates[9] = 0.1  # Monday 09:00-10:00 UTC only
    profile = ArrivalProfile(H, "UTC", tuple(rates), 30.0, weeks=4)
    # H = 20 + 30 = 50 s: at 08:59:05 the replica would be ready and waiting at 08:59:55 (slot 8)
    assert prewarm_decision(profile, pool(now_wall=MON + 9 * H - 55), DEFAULT).replicas == 0
    # at 08:59:15 it would be 09:00:05 (slot 9)
    assert prewarm_decision(profile, pool(now_wall=MON + 9 * H - 45), DEFAULT).replicas == 2


def test_replica_count_is_not_pushed_up_by_float_noise() -> None:
    # 0.1/s x 3 s = 0.30000000000000004 busy over a target of 0.3 x 1: one replica, not two
    assert prewarm_decision(flat(0.1, 3.0), pool(capacity=1, target=0.3), DEFAULT).replicas == 1
    # 0.3/s x 10 s = 3 busy / (2 x 0.5) = 3 exactly
    assert prewarm_decision(flat(0.3, 10.0), pool(capacity=2), DEFAULT).replicas == 3


def test_nothing_learnt_yet_says_how_many_weeks_there_are_and_are_needed() -> None:
    cfg = replace(DEFAULT, min_weeks=3)
    profile = ArrivalProfile(H, "UTC", (0.5,) * 168, 30.0, weeks=0, weeks_of_records=2)
    d = prewarm_decision(profile, pool(objective_s=1.0), cfg)
    assert d == PrewarmDecision(0, 0.0, 0.0, 0.0, "nothing learnt yet (2 whole weeks of records, need 3)")
