"""Lifecycle policies: pure functions of a snapshot and the time. No I/O, no logging, no sleeping.

The replica owner (:mod:`frugalserve.lifecycle.replica`) asks them what to do and carries it out; the
simulator runs the same functions on a virtual clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from frugalserve.lifecycle.config import LifecycleConfig

State = Literal["stopped", "starting", "ready", "sleeping", "stopping", "failed"]
IdleAction = Literal["sleep", "stop"]


@dataclass(frozen=True, slots=True)
class ReplicaView:
    """What the policies may know about one replica, at one moment (monotonic seconds)."""

    pool: str
    replica: str
    state: State
    in_flight: int
    last_used: float  # last request ended (or the replica became ready), whichever is later
    last_ready: float  # last time it became ready after a start or wake
    memory_gb: float = 0.0
    can_sleep: bool = False  # the backend speaks vLLM's sleep API


@dataclass(frozen=True, slots=True)
class IdleDecision:
    action: IdleAction | None  # None: nothing to do now
    check_at: float | None  # when to ask again (None: only after something changes)


def idle_decision(view: ReplicaView, now: float, cfg: LifecycleConfig) -> IdleDecision:
    """The idle ladder: ready → sleep after ``idle_sleep_s``, → stop after ``idle_stop_s``.

    A replica with work in flight is never touched (its requests end first, and each end restarts the
    idle time). ``min_warm_s`` after each start or wake holds both steps back. A backend without a
    sleep API takes the stop step at ``idle_sleep_s``: stopping is the only way it frees its GPU.
    """
    if view.in_flight > 0 or view.state not in ("ready", "sleeping"):
        return IdleDecision(None, None)
    warm_until = view.last_ready + cfg.min_warm_s
    sleep_s = cfg.idle_sleep_s
    stop_s = cfg.idle_stop_s
    if not view.can_sleep and sleep_s is not None:
        stop_s = sleep_s if stop_s is None else min(stop_s, sleep_s)
        sleep_s = None
    steps: list[tuple[float, IdleAction]] = []
    if view.state == "ready" and sleep_s is not None:
        steps.append((max(view.last_used + sleep_s, warm_until), "sleep"))
    if stop_s is not None:
        steps.append((max(view.last_used + stop_s, warm_until if view.state == "ready" else 0.0), "stop"))
    if not steps:
        return IdleDecision(None, None)
    due = [s for s in steps if s[0] <= now]
    if due:
        # the furthest step already due wins: stopping a replica that never got to sleep is fine
        return IdleDecision(max(due)[1], None)
    return IdleDecision(None, min(s[0] for s in steps))


def restart_delay(failures: int, base_s: float, cap_s: float) -> float:
    """Seconds to wait before a restart after ``failures`` failures in a row: 0, base, 2*base, ... cap."""
    if failures <= 1:
        return 0.0
    return min(cap_s, base_s * 2 ** (failures - 2))


def failures_after_crash(failures: int, ready_for_s: float, cap_s: float) -> int:
    """The new failure count after a crash: a replica that had stayed up ``cap_s`` starts counting afresh."""
    return 1 if ready_for_s >= cap_s else failures + 1


def choose_evictions(candidates: Sequence[ReplicaView], need_gb: float, free_gb: float) -> list[ReplicaView] | None:
    """Which idle replicas on a device to sleep or stop so that ``need_gb`` fits, least recently used first.

    Only ready replicas with nothing in flight may go. Returns [] when it already fits, None when it
    cannot be made to fit.
    """
    if need_gb <= free_gb + 1e-9:
        return []
    chosen: list[ReplicaView] = []
    idle = sorted(
        (c for c in candidates if c.state == "ready" and c.in_flight == 0 and c.memory_gb > 0),
        key=lambda c: c.last_used,
    )
    for c in idle:
        chosen.append(c)
        free_gb += c.memory_gb
        if need_gb <= free_gb + 1e-9:
            return chosen
    return None


def start_eta(elapsed_s: float | None, recent_starts_s: Sequence[float], default_s: float) -> float:
    """Seconds until a replica is likely ready: the mean of measured starts less what already passed."""
    expected = sum(recent_starts_s) / len(recent_starts_s) if recent_starts_s else default_s
    return max(0.0, expected - (elapsed_s or 0.0))


def prewarm_due(next_fire_wall: float | None, now_wall: float) -> bool:
    return next_fire_wall is not None and now_wall >= next_fire_wall


# -- which replica of a pool: the pool's effect rules, shared with the planner (frugalserve.sim) -----------

# Where a cold replica is brought up from, fastest first (a sleeping one only needs a wake).
COLD_ORDER = {"sleeping": 0, "stopped": 1, "failed": 2}


def bring_up_rank(state: str, index: int) -> tuple[int, int]:
    """Sort key of the cold replicas (states in COLD_ORDER) a pool may bring up: the fastest, then the lowest slot."""
    return COLD_ORDER[state], index


def removal_rank(ready: bool, in_flight: int, index: int) -> tuple[bool, int, int]:
    """Sort key of the replicas the autoscaler may remove: one still coming up first, then the fewest
    requests in flight, then the highest slot."""
    return ready, in_flight, -index


def idle_ladder_applies(min_replicas: int, autoscaled: bool, counted: int) -> bool:
    """Whether the idle ladder may sleep and stop a pool's replicas now. Never with ``replicas.min >= 1``
    (they stay up); with an autoscaler only once it is down to one replica: above that, removing replicas is
    the autoscaler's job (the two would otherwise fight, one sleeping what the other wants up)."""
    if min_replicas > 0:
        return False
    return not autoscaled or counted <= 1
