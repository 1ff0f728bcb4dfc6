"""``lifecycle.idle: auto``: the idle ladder's thresholds chosen from the idle periods a pool measured.

Pure, no I/O, no clock: the live pool (frugalserve.lifecycle.pool) feeds :class:`IdleTuner` the idle
periods it sees and the times and prices it knows; the cost planner (frugalserve.sim) calls the same
:func:`auto_thresholds` on a virtual clock.

An idle period (a gap) runs from the moment a pool has nothing in flight and nothing held to the arrival
of its next request. Stopping a replica after θ idle seconds costs, for one gap g:

- g <= θ: the replica was billed g seconds and the request found it ready: ``g x usd_per_s``;
- g > θ: billed θ seconds, then the next request starts it again: billed while it starts and that request
  waits the start: ``θ x usd_per_s + start_s x usd_per_s + start_s x usd_per_wait_s``.

Only the request that ends the gap is counted as waiting: the gaps alone do not say how many more arrive
during the start (they wait too, less on average), so the waiting is a lower bound, and a latency
objective (below) is what keeps cold starts rare where they hurt. The expected cost per idle period over
the measured gaps is minimised over θ in {``min_warm_s`` (the floor: the ladder takes no step sooner after
a start), each measured gap above it, never}: a cold start costs k = start_s x (1 + usd_per_wait_s /
usd_per_s) seconds of the replica, so stopping pays off only for gaps expected to run past θ + k, the
break-even (ski-rental) rule on the empirical distribution of gaps. Gaps sorted once, prefix sums, one
sweep: O(n log n). Equal costs go to the longer threshold (fewer cold starts for the same money), so
"never" wins when no gap is long enough to pay for a start. A higher price lowers θ or keeps it; a longer
start raises it or keeps it (k grows with start_s and shrinks as usd_per_s grows).

A latency objective (the tier's ``slo_ms``): when a cold start is longer than it, the request that waits
for one misses it. At most 5% of idle periods may then end in a cold start (there are at least as many
requests as idle periods, so at most 5% of requests miss and a P95 can hold): the cheapest θ that keeps
to it is chosen, "never" when no measured gap does.

Sleeping (vLLM's sleep API) frees the replica's GPU memory but not its bill: on demand, a sleeping
replica is billed like a ready one (frugalserve.accounting.costs). So sleeping saves nothing on a device
no other pool uses (no sleep step). Where pools share a device, the memory a sleeping replica frees is
worth its share of the device's price (``usd_per_s x device_share`` per second), and the sleep threshold
is chosen by the same rule with the wake as the cold start. A sleep threshold at or past the stop
threshold is dropped: the stop comes first.

Until ``min_samples`` gaps are measured the configured ``idle_sleep_s``/``idle_stop_s`` apply.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from frugalserve.lifecycle.config import IdleAutoConfig

COLD_SHARE = 0.05  # most idle periods that may end in a cold start that breaks the objective (a P95 holds)
_REL = 1e-9  # a threshold must be cheaper by more than this fraction to beat a longer one (float noise)


@dataclass(frozen=True, slots=True)
class IdleCosts:
    """What an idle second and a cold start cost one pool, as measured now."""

    usd_per_s: float  # one replica, per billed second (0: reserved billing or no price: idling costs nothing)
    start_s: float  # measured cold start (process up, weights loaded, health answering)
    wake_s: float  # measured wake from the pool's sleep level
    can_sleep: bool  # the backend speaks vLLM's sleep API
    min_warm_s: float  # lifecycle.min_warm_s: the ladder takes no step sooner after a start or wake
    usd_per_wait_s: float  # what a user's second of waiting for a cold start is worth
    objective_s: float | None  # the tier's time-to-first-token objective (None: no tier)
    shares_device: bool  # another pool uses the same device's memory
    device_share: float = 1.0  # the part of that device's memory one replica holds (gpu.memory_gb / device)


@dataclass(frozen=True, slots=True)
class IdleThresholds:
    sleep_s: float | None  # None: no sleep step
    stop_s: float | None  # None: never stop
    reason: str  # one line, with the numbers
    samples: int  # idle periods the decision stands on
    tuned: bool = False  # False: the configured thresholds (too few samples)


@dataclass(frozen=True, slots=True)
class ThresholdChoice:
    threshold: float | None  # None: never
    usd_per_period: float  # expected cost per idle period at that threshold
    cold: int  # measured gaps that would have ended in a cold start
    never_usd: float  # per idle period, never taking the step
    unconstrained: float | None  # the cheapest threshold ignoring the objective (== threshold when it did not bind)
    constrained: bool  # the objective moved the choice


def cheapest_threshold(
    sorted_gaps: Sequence[float],
    floor_s: float,
    idle_usd_per_s: float,
    cold_usd: float,
    max_cold: int | None = None,
) -> ThresholdChoice:
    """The threshold minimising the expected cost per idle period (module docstring), ``sorted_gaps`` ascending.

    ``cold_usd`` is what one cold start costs (billed + waiting); ``max_cold`` caps how many of the gaps may
    end in one (None: no cap). Candidates: ``floor_s``, every gap above it, never (always within any cap).
    """
    n = len(sorted_gaps)
    if n == 0:
        raise ValueError("no idle periods to choose from")
    prefix = [0.0]
    for g in sorted_gaps:
        prefix.append(prefix[-1] + g)

    def cost(threshold: float, warm: int) -> float:  # warm: the gaps <= threshold
        return idle_usd_per_s * prefix[warm] + (n - warm) * (threshold * idle_usd_per_s + cold_usd)

    never = idle_usd_per_s * prefix[n]
    best: tuple[float | None, float, int] = (None, never, 0)  # (threshold, total cost, cold)
    free: tuple[float | None, float] = (None, never)

    def consider(threshold: float, warm: int) -> None:
        nonlocal best, free
        total = cost(threshold, warm)
        if total < free[1] - _REL * abs(free[1]):
            free = (threshold, total)
        if (max_cold is None or n - warm <= max_cold) and total < best[1] - _REL * abs(best[1]):
            best = (threshold, total, n - warm)

    # longest first, so that an equal cost keeps the longer threshold
    j = n - 1
    while j >= 0 and sorted_gaps[j] > floor_s:
        value = sorted_gaps[j]
        consider(value, j + 1)  # j is the last index holding value: j + 1 gaps are <= it
        while j >= 0 and sorted_gaps[j] == value:
            j -= 1
    consider(floor_s, bisect_right(sorted_gaps, floor_s))
    return ThresholdChoice(best[0], best[1] / n, best[2], never / n, free[0], best[0] != free[0])


def auto_thresholds(
    idle_gaps: Sequence[float],
    costs: IdleCosts,
    fallback: tuple[float | None, float | None],
    min_samples: int = 30,
) -> IdleThresholds:
    """The idle ladder's ``(sleep_s, stop_s)`` for the measured ``idle_gaps`` (module docstring); the
    ``fallback`` (the configured pair) until there are ``min_samples`` of them."""
    n = len(idle_gaps)
    if n < min_samples:
        return IdleThresholds(
            fallback[0],
            fallback[1],
            f"configured thresholds (sleep {_secs(fallback[0])}, stop {_secs(fallback[1])}): "
            f"{n} idle periods measured, {min_samples} needed",
            n,
        )
    gaps = sorted(max(0.0, g) for g in idle_gaps)
    c, w = costs.usd_per_s, costs.usd_per_wait_s
    stop = cheapest_threshold(
        gaps, costs.min_warm_s, c, costs.start_s * (c + w), _max_cold(n, costs.start_s, costs.objective_s)
    )
    stop_reason = _explain("stop", stop, n, costs.start_s, "start", c, costs.objective_s)
    sleep_s: float | None = None
    if not costs.can_sleep:
        sleep_reason = "no sleep: the backend cannot sleep"
    elif not costs.shares_device:
        sleep_reason = "no sleep: a sleeping replica is billed like a ready one and no other pool needs its memory"
    else:
        cs = c * costs.device_share
        sleep = cheapest_threshold(
            gaps, costs.min_warm_s, cs, costs.wake_s * (cs + w), _max_cold(n, costs.wake_s, costs.objective_s)
        )
        sleep_s = sleep.threshold
        sleep_reason = _explain("sleep", sleep, n, costs.wake_s, "wake", cs, costs.objective_s)
        if sleep_s is not None and stop.threshold is not None and sleep_s >= stop.threshold:
            sleep_s = None
            sleep_reason = f"no sleep: the stop comes first ({sleep_reason})"
    return IdleThresholds(sleep_s, stop.threshold, f"{stop_reason}; {sleep_reason}", n, tuned=True)


def _max_cold(n: int, cold_s: float, objective_s: float | None) -> int | None:
    if objective_s is None or cold_s <= objective_s:
        return None
    return math.floor(COLD_SHARE * n + 1e-9)


def _explain(
    step: str, choice: ThresholdChoice, n: int, cold_s: float, cold: str, usd_per_s: float, objective_s: float | None
) -> str:
    if usd_per_s <= 0:
        return f"never {step}: an idle second costs nothing (reserved billing or no gpu.usd_per_hour)"
    head = f"never {step}" if choice.threshold is None else f"{step} after {_secs(choice.threshold)}"
    text = (
        f"{head}: ${choice.usd_per_period:.4g} per idle period ({choice.cold} of {n} would end in a "
        f"{cold_s:.3g} s {cold}), never: ${choice.never_usd:.4g}; idle ${usd_per_s * 3600:.4g}/h"
    )
    if choice.constrained and objective_s is not None:
        text += (
            f"; a {cold_s:.3g} s {cold} breaks the {objective_s:g} s objective, so at most "
            f"{COLD_SHARE:.0%} may (cheapest otherwise: {_step_at(step, choice.unconstrained)})"
        )
    return text


def _step_at(step: str, threshold: float | None) -> str:
    return f"never {step}" if threshold is None else f"{step} after {_secs(threshold)}"


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{round(value, 1):g} s"


class IdleTuner:
    """One pool's measured idle periods (the last ``max_samples``) and the thresholds chosen from them,
    again at most every ``refresh_s``. No I/O and no clock: the caller passes the time."""

    def __init__(self, cfg: IdleAutoConfig, fallback: tuple[float | None, float | None]) -> None:
        self.cfg = cfg
        self.fallback = fallback
        self._gaps: deque[float] = deque(maxlen=cfg.max_samples)
        self._current: IdleThresholds | None = None
        self.decided_at: float | None = None  # the caller's time of the last decision
        self.pending = 0  # gaps recorded since the last decision

    def record_gap(self, seconds: float) -> None:
        self._gaps.append(max(0.0, seconds))
        self.pending += 1

    def due_at(self) -> float | None:
        """When :meth:`decide` will choose afresh (None: at its first call)."""
        return None if self.decided_at is None else self.decided_at + self.cfg.refresh_s

    @property
    def gaps(self) -> tuple[float, ...]:
        return tuple(self._gaps)

    @property
    def current(self) -> IdleThresholds | None:
        return self._current

    def decide(self, now: float, costs: IdleCosts) -> IdleThresholds:
        """The thresholds in force at ``now``: chosen afresh when ``refresh_s`` has passed since the last time."""
        if self._current is None or self.decided_at is None or now - self.decided_at >= self.cfg.refresh_s:
            self._current = auto_thresholds(self._gaps, costs, self.fallback, self.cfg.min_samples)
            self.decided_at = now
            self.pending = 0
        return self._current
