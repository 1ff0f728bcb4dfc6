"""The lifecycle policies are pure: a snapshot and a time in, a decision out."""

from __future__ import annotations

from frugalserve.lifecycle.config import LifecycleConfig
from frugalserve.lifecycle.policy import (
    ReplicaView,
    choose_evictions,
    failures_after_crash,
    idle_decision,
    prewarm_due,
    restart_delay,
    start_eta,
)

LADDER = LifecycleConfig(idle_sleep_s=60, idle_stop_s=600, min_warm_s=0)


def view(
    state: str = "ready", in_flight: int = 0, last_used: float = 0.0, last_ready: float = 0.0, **kw: object
) -> ReplicaView:
    return ReplicaView(
        "p", kw.pop("name", "p-0"), state, in_flight, last_used, last_ready, can_sleep=kw.pop("can_sleep", True), **kw
    )  # type: ignore[arg-type]


def test_ready_replica_sleeps_after_idle_sleep_s_and_says_when_to_look_again() -> None:
    assert idle_decision(view(), 59, LADDER).action is None
    assert idle_decision(view(), 59, LADDER).check_at == 60
    assert idle_decision(view(), 60, LADDER).action == "sleep"


def test_sleeping_replica_stops_after_idle_stop_s() -> None:
    assert idle_decision(view("sleeping"), 599, LADDER).action is None
    assert idle_decision(view("sleeping"), 600, LADDER).action == "stop"


def test_replica_with_requests_in_flight_is_never_put_down() -> None:
    d = idle_decision(view(in_flight=1), 10_000, LADDER)
    assert d.action is None and d.check_at is None


def test_min_warm_keeps_a_freshly_woken_replica_up() -> None:
    cfg = LifecycleConfig(idle_sleep_s=60, idle_stop_s=None, min_warm_s=600)
    assert idle_decision(view(last_ready=0), 300, cfg).action is None
    assert idle_decision(view(last_ready=0), 300, cfg).check_at == 600
    assert idle_decision(view(last_ready=0), 600, cfg).action == "sleep"


def test_backend_without_sleep_api_is_stopped_at_idle_sleep_s() -> None:
    assert idle_decision(view(can_sleep=False), 60, LADDER).action == "stop"


def test_long_overdue_replica_is_stopped_rather_than_slept() -> None:
    assert idle_decision(view(), 700, LADDER).action == "stop"


def test_disabled_ladder_never_acts() -> None:
    cfg = LifecycleConfig(idle_sleep_s=None, idle_stop_s=None)
    assert idle_decision(view(), 1e9, cfg) == idle_decision(view(), 0, cfg)
    assert idle_decision(view(), 1e9, cfg).action is None


def test_restart_backoff_is_immediate_then_doubles_up_to_the_cap() -> None:
    assert [restart_delay(n, 1, 5) for n in range(1, 7)] == [0, 1, 2, 4, 5, 5]


def test_replica_that_stayed_up_resets_its_failure_count() -> None:
    assert failures_after_crash(4, ready_for_s=61, cap_s=60) == 1
    assert failures_after_crash(4, ready_for_s=2, cap_s=60) == 5


def test_eviction_takes_least_recently_used_idle_replicas_only() -> None:
    a = view(name="a", last_used=10, memory_gb=8)
    b = view(name="b", last_used=5, memory_gb=8)
    busy = view(name="c", last_used=1, memory_gb=8, in_flight=2)
    asleep = view("sleeping", name="d", last_used=0, memory_gb=8)
    assert choose_evictions([a, b, busy, asleep], need_gb=8, free_gb=4) == [b]
    assert choose_evictions([a, b, busy], need_gb=16, free_gb=4) == [b, a]
    assert choose_evictions([busy], need_gb=8, free_gb=0) is None
    assert choose_evictions([a], need_gb=8, free_gb=8) == []


def test_eta_uses_measured_starts_less_elapsed() -> None:
    assert start_eta(None, [], 30) == 30
    assert start_eta(2.0, [4.0, 6.0], 30) == 3.0
    assert start_eta(10.0, [4.0], 30) == 0.0


def test_prewarm_due_at_or_after_the_fire_time() -> None:
    assert not prewarm_due(None, 5)
    assert not prewarm_due(10, 9.9)
    assert prewarm_due(10, 10)
