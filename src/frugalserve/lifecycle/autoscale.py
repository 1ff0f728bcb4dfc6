"""How many replicas a pool wants: a pure policy over one typed input, Knative-KPA style.

No I/O, no logging, no clock: the pool's scaler (frugalserve.lifecycle.scaler) builds a
:class:`ScaleInput` every ``autoscale.interval_s``, calls :func:`desired_replicas` with the
:class:`ScaleHistory` the last call returned, and carries the :class:`ScaleDecision` out. The planner
runs the same function on a virtual clock.

The policy, step by step (each step that changes the count names itself in ``signal`` and ``reason``):

- **Signals** (:func:`observe`). Each ready replica's load is the largest of its fractions of one
  replica's capacity: requests in flight through the gateway (``utilization``, or ``concurrency``
  with that metric); what its server says it runs and queues, running + waiting, which also counts
  other clients' traffic (``upstream``, only when both are known); its KV cache usage over
  ``kv_cache_target`` (``kv_cache``); and with ``metric: gpu_utilization`` its GPUs' duty cycle
  (``gpu_utilization``; where no replica reports it, the other signals carry the load and the reason
  says so). Unknown (stale) telemetry is ``None`` and ignored. A starting or waking replica carries
  nothing yet. Requests held for a replica add ``held / capacity`` (``held``). The pool's load, in
  replicas' worth of capacity, is the sum; its ``signal`` is the one contributing most, ties going
  to the first of :data:`SIGNAL_ORDER`.
- **Windows.** The stable window (``stable_window_s``, KPA's 60 s) averages the observations of
  normal decisions, so one busy tick does not add a replica and one quiet tick does not remove
  one. The panic window (``panic_window_s``) is a short average that sees a burst early. The pool
  wants ``ceil(load / target)`` replicas, ``target`` being the per-replica target as a fraction.
- **Panic.** When the panic window wants at least ``panic_threshold`` x the current replicas (and
  more than now), the pool panics for ``stable_window_s`` from the last tick that still saw the
  burst: it follows the larger of the panic and stable wants and never scales down, so that a burst
  is not given back before the stable window has seen it.
- **Band.** With ``scale_in_below``, outside panic, the count holds while the stable load per
  replica stays between ``scale_in_below`` and ``target`` (seed 001's 30%/70%, seed 002's 50-65%).
- **Rates.** One decision goes up to at most ``ceil(max(current, 1) x max_scale_up_rate)`` and down
  to no fewer than ``floor(current / max_scale_down_rate)``.
- **Cooldowns.** No scale-up within ``scale_up_cooldown_s`` of the last one; no scale-down within
  ``scale_down_cooldown_s`` of the last change either way (a new replica gets time to take load).
- **Bounds and zero.** The count stays within ``replicas: {min, max}`` and at or above the forecast
  ``floor`` (predictive prewarm). The policy never removes the last replica: the idle ladder takes
  it to zero (sleep, then stop). At zero, held requests start one replica at once, past window and
  cooldown; with none held a pool at zero stays at ``min`` and forgets its window (the load it remembers
  left with the replicas the idle ladder took down).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from frugalserve.lifecycle.config import AutoscaleConfig, ReplicasConfig

Action = Literal["scale_up", "scale_down", "hold"]

# Ties between signals go to the first: the configured metric, then the gateway's own count, then what
# the server reports, then held requests.
SIGNAL_ORDER = ("gpu_utilization", "utilization", "concurrency", "upstream", "kv_cache", "held")

# Loads and rates are sums and products of floats: a load of exactly 3 targets must not read as 3.0000000000000004.
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ReplicaSignals:
    """One replica that serves or is coming up, at one moment. ``None``: not known (no fresh scrape)."""

    name: str
    ready: bool  # False: starting or waking (counts as a replica, carries no load yet)
    in_flight: int  # requests the gateway has sent it and not yet finished
    running: float | None = None  # vllm:num_requests_running
    waiting: float | None = None  # vllm:num_requests_waiting
    kv_cache_usage: float | None = None  # vllm:kv_cache_usage_perc, 0..1
    gpu_utilization: float | None = None  # NVML duty cycle of its GPUs, 0..1


@dataclass(frozen=True, slots=True)
class ScaleInput:
    now: float  # monotonic seconds
    capacity: int  # requests one replica serves at once (PoolConfig.capacity)
    replicas: tuple[ReplicaSignals, ...]  # replicas that count: ready, starting or waking (not draining)
    held: int  # requests waiting in the pool for a replica
    bounds: ReplicasConfig
    floor: int = 0  # a lower bound from outside at this moment (predictive prewarm's forecast); within bounds


@dataclass(frozen=True, slots=True)
class Observation:
    time: float
    load: float  # the pool's load in replicas' worth of capacity (sum of per-replica fractions + held)
    signal: str  # the signal that set it: utilization | concurrency | upstream | kv_cache | gpu_utilization | held


@dataclass(frozen=True, slots=True)
class ScaleHistory:
    """What the policy remembers between calls; returned anew in each decision (never mutated)."""

    observations: tuple[Observation, ...] = ()  # within the stable window, oldest first
    panic_until: float | None = None  # in panic mode until then (extended while the burst lasts)
    panic_peak: int = 0  # the most replicas wanted during this panic (never scale down in a panic)
    last_up: float | None = None  # when the last scale-up was decided
    last_change: float | None = None  # when the last scale-up or scale-down was decided


@dataclass(frozen=True, slots=True)
class ScaleDecision:
    desired: int
    current: int
    action: Action
    # what decided: a load signal (SIGNAL_ORDER), or min, max (bounds), floor (the forecast floor, or the
    # last replica left to the idle ladder), held (held requests at zero), cooldown, rate, band
    signal: str
    load: float  # averaged load the decision used (stable or panic window)
    panic: bool
    entered_panic: bool  # this call entered panic mode
    left_panic: bool  # this call left it
    reason: str  # one line with the numbers behind the decision
    history: ScaleHistory


def _strongest(weights: Iterable[tuple[str, float]]) -> str:
    """The name with the largest weight; ties to the first in SIGNAL_ORDER."""
    return max(weights, key=lambda w: (w[1], -SIGNAL_ORDER.index(w[0])))[0]


def _base_signal(cfg: AutoscaleConfig) -> str:
    return "concurrency" if cfg.metric == "concurrency" else "utilization"


def _replica_load(r: ReplicaSignals, capacity: int, cfg: AutoscaleConfig) -> tuple[str, float]:
    """The replica's largest signal as a fraction of one replica's capacity, and its name."""
    found = [(_base_signal(cfg), r.in_flight / capacity)]
    if r.running is not None and r.waiting is not None:
        found.append(("upstream", (r.running + r.waiting) / capacity))
    if r.kv_cache_usage is not None:
        found.append(("kv_cache", r.kv_cache_usage / cfg.kv_cache_target))
    if cfg.metric == "gpu_utilization" and r.gpu_utilization is not None:
        found.append(("gpu_utilization", r.gpu_utilization))
    name = _strongest(found)
    return name, max(v for _, v in found)


def _gpu_unknown(inp: ScaleInput, cfg: AutoscaleConfig) -> bool:
    return cfg.metric == "gpu_utilization" and not any(r.ready and r.gpu_utilization is not None for r in inp.replicas)


def observe(inp: ScaleInput, cfg: AutoscaleConfig) -> Observation:
    """The pool's load now, in replicas' worth of capacity, and the signal that contributes most to it."""
    by_signal: dict[str, float] = {_base_signal(cfg): 0.0}
    if cfg.metric == "gpu_utilization" and not _gpu_unknown(inp, cfg):
        by_signal["gpu_utilization"] = 0.0
    load = 0.0
    for r in inp.replicas:
        if not r.ready:
            continue
        name, u = _replica_load(r, inp.capacity, cfg)
        by_signal[name] = by_signal.get(name, 0.0) + u
        load += u
    if inp.held > 0:
        by_signal["held"] = inp.held / inp.capacity
        load += inp.held / inp.capacity
    return Observation(inp.now, load, _strongest(by_signal.items()))


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - _EPS))


def _floor(x: float) -> int:
    return max(0, math.floor(x + _EPS))


def _mean(obs: Sequence[Observation]) -> float:
    return sum(o.load for o in obs) / len(obs)


def _window_signal(obs: Sequence[Observation]) -> str:
    """The signal behind most of a window's load."""
    weights: dict[str, float] = {}
    for o in obs:
        weights[o.signal] = weights.get(o.signal, 0.0) + o.load
    return _strongest(weights.items())


def _target_text(target: float, capacity: int, cfg: AutoscaleConfig) -> str:
    if cfg.metric == "concurrency":
        return f"{target * capacity:.2f} requests/replica"
    return f"{target:.2f}/replica"


def desired_replicas(inp: ScaleInput, history: ScaleHistory, cfg: AutoscaleConfig) -> ScaleDecision:
    """One decision: how many replicas the pool should have now, why, and the history for the next call."""
    now = inp.now
    # At zero with nobody waiting, the window's memory is of replicas the idle ladder has taken down: their
    # load went with them, and only a held request (or min, or the forecast) may bring one back.
    resting = not inp.replicas and inp.held == 0
    earlier = () if resting else tuple(o for o in history.observations if now - o.time < cfg.stable_window_s)
    window = (*earlier, observe(inp, cfg))
    panic_obs = [o for o in window if now - o.time < cfg.panic_window_s]
    stable_load = _mean(window)
    panic_load = _mean(panic_obs)
    target = cfg.target_fraction(inp.capacity)
    want_stable = _ceil(stable_load / target)
    want_panic = _ceil(panic_load / target)
    current = len(inp.replicas)
    base = max(current, 1)

    was_panic = not resting and history.panic_until is not None and now < history.panic_until
    burst = want_panic >= cfg.panic_threshold * base and want_panic > current
    panic = burst or was_panic
    panic_until = now + cfg.stable_window_s if burst else (history.panic_until if panic else None)
    left_panic = history.panic_until is not None and not panic
    notes: list[str] = []

    if panic:
        load = panic_load
        signal = _window_signal(panic_obs)
        peak = history.panic_peak if was_panic else 0
        desired = max(want_panic, want_stable, current, peak)
        if burst:
            head = (
                f"panic: {signal} {panic_load:.2f} replicas' worth over {cfg.panic_window_s:g}s wants {want_panic} "
                f"(>= {cfg.panic_threshold:g}x {base} now)"
            )
        else:
            assert panic_until is not None
            head = (
                f"panic ({panic_until - now:.0f}s left): {signal} {panic_load:.2f} replicas' worth over "
                f"{cfg.panic_window_s:g}s wants {want_panic}; {current} now"
            )
        if desired != want_panic:
            notes.append(f"no scale-down in panic: keeps {desired} (stable wants {want_stable}, peak {peak})")
    else:
        load = stable_load
        signal = _window_signal(window)
        desired = want_stable
        head = (
            f"{'panic over: ' if left_panic else ''}{signal} {stable_load:.2f} replicas' worth over "
            f"{cfg.stable_window_s:g}s (target {_target_text(target, inp.capacity, cfg)}) wants {want_stable}; "
            f"{current} now"
        )
        scale_in = cfg.scale_in_fraction(inp.capacity)
        if scale_in is not None and current >= 1 and desired < current:
            per_replica = stable_load / current
            if scale_in - _EPS <= per_replica <= target + _EPS:
                desired, signal = current, "band"
                notes.append(f"band: {per_replica:.2f}/replica within {scale_in:.2f}-{target:.2f} holds {current}")
    if _gpu_unknown(inp, cfg):
        notes.append("gpu_utilization unknown: in-flight utilization and server metrics instead")

    up_limit = _ceil(base * cfg.max_scale_up_rate)
    down_limit = _floor(current / cfg.max_scale_down_rate)
    if desired > up_limit:
        desired, signal = up_limit, "rate"
        notes.append(f"rate: at most {up_limit} ({cfg.max_scale_up_rate:g}x {base})")
    elif desired < down_limit:
        desired, signal = down_limit, "rate"
        notes.append(f"rate: at least {down_limit} ({current} / {cfg.max_scale_down_rate:g})")

    if desired > current and history.last_up is not None and now - history.last_up < cfg.scale_up_cooldown_s:
        left = history.last_up + cfg.scale_up_cooldown_s - now
        notes.append(f"cooldown: scale-up to {desired} held {left:.0f}s more")
        desired, signal = current, "cooldown"
    elif (
        desired < current and history.last_change is not None and now - history.last_change < cfg.scale_down_cooldown_s
    ):
        left = history.last_change + cfg.scale_down_cooldown_s - now
        notes.append(f"cooldown: scale-down to {desired} held {left:.0f}s more")
        desired, signal = current, "cooldown"

    high = inp.bounds.max
    # the first of the largest lower bounds names itself
    lows = [
        ("min", inp.bounds.min, f"min: {inp.bounds.min}"),
        ("floor", min(inp.floor, high), f"floor: the forecast wants {inp.floor}"),
        ("held", 1 if current == 0 and inp.held > 0 else 0, f"held: {inp.held} waiting, one replica at once"),
        ("floor", 1 if current >= 1 else 0, "floor: keeps 1, the idle ladder takes the last replica to zero"),
    ]
    low_name, low, low_note = max(lows, key=lambda b: b[1])
    if desired > high:
        desired, signal = high, "max"
        notes.append(f"max: {high}")
    elif desired < low:
        desired, signal = low, low_name
        notes.append(low_note)

    action: Action = "scale_up" if desired > current else "scale_down" if desired < current else "hold"
    new_history = ScaleHistory(
        observations=window,
        panic_until=panic_until,
        panic_peak=max(history.panic_peak if was_panic else 0, desired) if panic else 0,
        last_up=now if action == "scale_up" else history.last_up,
        last_change=now if action != "hold" else history.last_change,
    )
    return ScaleDecision(
        desired=desired,
        current=current,
        action=action,
        signal=signal,
        load=load,
        panic=panic,
        entered_panic=panic and not was_panic,
        left_panic=left_panic,
        reason="; ".join([head, *notes]),
        history=new_history,
    )
