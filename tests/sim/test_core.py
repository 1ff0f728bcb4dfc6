"""The simulator on small traces whose every number is worked out by hand in the comments."""

from __future__ import annotations

import numpy as np
import pytest

from frugalserve import config as cfg
from frugalserve.sim import report
from frugalserve.sim.core import Simulation
from frugalserve.sim.perf import PerfModel
from frugalserve.sim.policies import Policy
from frugalserve.sim.trace import Trace

# prefill 1000 tokens/s and decode 100 tokens/s: a request of 1000 prompt and 100 output tokens has its first
# token 1 s after it starts running and ends 2 s after; $3.60 an hour is $0.001 a second.
PERF = PerfModel(1000.0, 100.0, 4, 10.0, (2.0, 5.0), 0.0, 3.6, "on_demand")


def trace(times: list[float], prompt: int = 1000, out: int = 100) -> Trace:
    n = len(times)
    return Trace(
        np.array(times, dtype=np.float64),
        np.zeros(n, dtype=np.int32),
        np.full(n, prompt, dtype=np.int64),
        np.zeros(n, dtype=np.int64),
        np.full(n, out, dtype=np.int64),
        np.ones(n, dtype=np.int8),
        np.zeros(n, dtype=np.int32),
        ("m",),
    )


def pool_config(lifecycle: str, backend: str = "sleep_api: none", extra: str = "") -> cfg.Config:
    return cfg.load_text(
        f"pools: [{{name: p, model: m, backend: {{command: 'x {{port}}', {backend}}}, gpu: {{usd_per_hour: 3.6}},"
        f" lifecycle: {lifecycle}{extra}}}]"
    )


def simulate(config: cfg.Config, times: list[float], perf: PerfModel = PERF, objective: str | None = None):  # type: ignore[no-untyped-def]
    sim = Simulation(config, {"p": perf}, trace(times))
    sim.run()
    obj = report.parse_objective(objective) if objective else None
    return sim, report.summarize(sim, Policy("test", (), config, {}), obj)


def test_cold_start_hold_and_idle_stop_by_hand() -> None:
    # t=0 finds the pool stopped: a start of 10 s; it runs 10-12 (first token at 11: TTFT 11).
    # t=5 is held behind the same start (no second start), runs 10-12 in a second slot: TTFT 10 - 5 + 1 = 6.
    # Idle from 12, stopped at 12 + 60 = 72. t=200 starts again, ready at 210, runs 210-212: TTFT 11.
    # Billed: 0-72 (72 s) and 200-212 (12 s) = 84 s = $0.084; cold start 20 s; busy 10-12 and 210-212 = 4 s.
    # Always-on: one replica from the first request to the last, 0-200 = $0.200 (the same for every policy).
    sim, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60}"), [0, 5, 200])
    assert sim.ttft == [11.0, 6.0, 11.0]
    assert sim.latency == [12.0, 7.0, 12.0]
    assert r.cost_usd == pytest.approx(0.084)
    assert r.ideal_cost_usd == pytest.approx(0.004)
    assert r.always_on_cost_usd == pytest.approx(0.200)
    assert r.gpu_hours == pytest.approx(84 / 3600)
    assert (r.cold_starts, r.pools[0].stops, r.pools[0].sleeps) == (2, 1, 0)
    assert r.pools[0].utilisation == pytest.approx(4 / 84)
    assert r.savings_vs_always_on == pytest.approx(1 - 0.084 / 0.200)
    assert r.usd_per_million_tokens == pytest.approx(0.084 / 3300 * 1e6)


def test_sleep_then_wake_is_quicker_than_a_start_but_costs_the_same_per_second() -> None:
    # t=0: start, runs 10-12; idle from 12: asleep at 12 + 30 = 42. t=50: a wake of 2 s (level 1), runs 52-54:
    # TTFT 52 - 50 + 1 = 3. Idle from 54: asleep at 84, stopped at 54 + 100 = 154. t=300: a start, runs 310-312.
    # Sleeping is billed (the GPU is held): 0-154 and 300-312 = 166 s.
    sim, r = simulate(
        pool_config("{idle_sleep_s: 30, idle_stop_s: 100, sleep_level: 1}", backend="sleep_api: vllm"), [0, 50, 300]
    )
    assert sim.ttft == [11.0, 3.0, 11.0]
    p = r.pools[0]
    assert (p.starts, p.wakes, p.sleeps, p.stops) == (2, 1, 2, 1)
    assert r.cost_usd == pytest.approx(0.166)


def test_min_warm_holds_the_ladder_back_and_a_minimum_charge_tops_up_short_runs() -> None:
    # min_warm_s 100 after the start that ends at 10: the stop at 12 + 5 = 17 waits until 110 (billed 110 s).
    # t=500 starts again and the window closes when it ends, at 512 (billed 12 s): 122 s in all.
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 5, min_warm_s: 100}"), [0, 500])
    assert r.cost_usd == pytest.approx(0.122)
    # No min_warm: stopped at 17; a 60 s minimum charge per start bills 60 s.
    perf = PerfModel(1000.0, 100.0, 4, 10.0, (2.0, 5.0), 0.0, 3.6, "on_demand", min_billed_s=60.0)
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 5}"), [0, 100], perf)
    # the start at 0 stops at 17: 60 s billed. The start at 100 is still up when the window closes at 112
    # (its minimum is not known to be due yet): 12 s. 72 s in all.
    assert r.cost_usd == pytest.approx(0.072)


def test_reserved_gpus_cost_the_whole_window_whatever_the_policy() -> None:
    perf = PerfModel(1000.0, 100.0, 4, 10.0, (2.0, 5.0), 0.0, 3.6, "reserved")
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60}"), [0, 5, 200], perf)
    assert r.cost_usd == pytest.approx(0.212)  # 0 to 212, when the last request ends


def test_held_requests_past_the_queue_or_the_wait_are_refused() -> None:
    # max_queue 2: t=0 and t=1 are held behind the start, t=2 is refused at once.
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60, max_queue: 2}"), [0, 1, 2])
    assert r.refused_by_reason == {"queue_full": 1} and r.served == 2
    # max_wait 5 s against a 10 s start: the request is refused at 5 s (the start still goes on).
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60, max_wait_s: 5}"), [0])
    assert r.refused_by_reason == {"timeout": 1} and r.served == 0


def test_concurrency_queues_requests_inside_a_replica() -> None:
    # 6 requests at t=0 on a replica of 4 slots: 4 run 10-12, 2 wait for slots and run 12-14 (TTFT 13).
    sim, _ = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60}"), [0] * 6)
    assert sorted(sim.ttft) == [11.0] * 4 + [13.0] * 2


def test_objective_counts_refused_requests_as_never_answered() -> None:
    # TTFTs 11, 6, 11 (first test): P95 is 11 > 10 -> not met; 3 violations? two above 10.
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60}"), [0, 5, 200], objective="p95_ttft_s=10")
    assert (r.meets_objective, r.objective_violations, r.objective_value_s) == (False, 2, 11.0)
    _, r = simulate(pool_config("{idle_sleep_s: null, idle_stop_s: 60}"), [0, 5, 200], objective="p95_ttft_s=12")
    assert r.meets_objective is True
    _, r = simulate(
        pool_config("{idle_sleep_s: null, idle_stop_s: 60, max_queue: 2}"), [0, 1, 2], objective="p95_ttft_s=100"
    )
    assert r.meets_objective is False and r.objective_value_s == float("inf")


def test_a_floor_of_replicas_is_up_from_the_start_and_never_stops() -> None:
    config = pool_config("{idle_sleep_s: 1, idle_stop_s: 2}", extra=", replicas: {min: 1, max: 1}")
    sim, r = simulate(config, [0, 1000])
    # ready at the trace's start: no cold start, TTFT = prefill only; billed the whole 0-1002 window
    assert sim.ttft == [1.0, 1.0]
    assert r.cold_starts == 0 and r.pools[0].stops == 0
    assert r.cost_usd == pytest.approx(1.002)


def test_the_autoscaler_adds_replicas_under_load_and_removes_them_after() -> None:
    # 40 requests a second for 60 s at 2 s each on replicas of capacity 4 (target 0.7): about 80 in flight
    # wants many replicas; max 3 caps it. Afterwards the pool scales down and the last replica stops.
    config = cfg.load_text(
        "pools: [{name: p, model: m, backend: {command: 'x {port}', sleep_api: none}, capacity: 4,"
        " gpu: {usd_per_hour: 3.6}, replicas: {min: 0, max: 3}, lifecycle: {idle_sleep_s: null, idle_stop_s: 60}}]"
    )
    times = [i / 40 for i in range(2400)] + [2000.0]  # a late request keeps the window open past the scale-down
    sim, r = simulate(config, times)
    p = r.pools[0]
    assert p.peak_replicas == 3
    assert p.scale_events.get("scale_up", 0) >= 1 and p.scale_events.get("scale_down", 0) >= 1
    # every replica stopped again, but the one the late request started (the window closes when it ends)
    assert p.starts >= 4 and p.stops == p.starts - 1
    assert r.served == 2401
    # one replica would have taken 2400 x 2 s / 4 slots = 1200 s of work: three finish far sooner
    assert max(sim.latency) < 600
