"""Predictive prewarm: learn each pool's arrival rate by time of week, and decide when waking ahead pays.

Pure functions, no I/O: the usage records are read by frugalserve.accounting.arrivals (in a worker
thread), the pool's scaler (frugalserve.lifecycle.scaler) calls :func:`prewarm_decision` each tick and
carries it out. Cron prewarm (``lifecycle.prewarm``) stays for peaks known in advance.

The estimator (:func:`learn_profile`). Time is cut into buckets of ``bucket_s`` (absolute, index
floor(t / bucket_s)) and the week into slots of the same length, slot 0 at Monday 00:00 in the pool's
timezone. Each bucket of the last ``weeks`` whole weeks belongs to the slot its start falls in, in local
wall time, so 09:00 stays 09:00 across a change of daylight saving time (in the week of a change a few
slots are seen once more or once less). A slot's rate is the MEDIAN of its buckets' counts over those
weeks, per second. A median, not a mean, because traffic has one-off events: Mondays 09:00 over four
weeks of [12, 12, 300, 12] arrivals (a batch job once) give 12 where a mean gives 84; [0, 12, 12, 12]
(a holiday) give 12 where a mean gives 9. It needs three weeks to outvote one odd week (of two it is
the mean). Weeks count back from the last bucket boundary before now; a week counts only when it starts
at or after the pool's first record: before it, the absence of records says nothing about demand.

The rule (:func:`prewarm_decision`), with arrivals taken as Poisson at the rate λ of the slot a replica
woken now would be ready and waiting in (now + H, H = cold_s + lead_s):
- waiting if nothing is done: an arrival within H has probability p = 1 - e^(-λH); the first one waits
  the cold start and the n = λ cold_s arriving during it half of it on average, so p (cold_s + n cold_s/2)
  seconds, at ``usd_per_waiting_s``;
- idling if woken now: from ready until the first arrival X ~ Exp(λ), cut at the idle ladder's linger_s
  and at H, after which the decision is taken again (both costs are counted over the same window):
  E[min(X, M)] = (1 - e^(-λM)) / λ with M = min(H, linger_s) (M itself when λ = 0), at the replica's price.
At low rates both sides grow with H and the rule reads λ cold_s usd_per_waiting_s > usd per second of a
replica: keep warm while the waiting it saves per second costs more than the replica does. Prewarm also
when a cold start would break the tier's objective and an arrival within H is at least
``objective_probability`` likely. Then as many replicas as Little's law says are busy at once:
ceil(λ x mean duration / (capacity x target)), at least one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from frugalserve.lifecycle.config import PredictivePrewarmConfig

WEEK_S = 7 * 24 * 3600
_EPS = 1e-9  # float noise in a quotient must not add a replica (3.0000000000000004 is 3)


@dataclass(frozen=True, slots=True)
class ArrivalProfile:
    """Arrivals per second in each slot of the week (slot 0 starts Monday 00:00 in ``timezone``)."""

    bucket_s: float
    timezone: str
    rates: tuple[float, ...]  # len = WEEK_S / bucket_s; all 0.0 when nothing was learnt
    mean_duration_s: float  # mean request duration in the records (Little: concurrency = rate x duration)
    weeks: int  # whole weeks of records the rates stand on (0: nothing learnt yet)
    weeks_of_records: int = 0  # whole weeks of records found, also when fewer than min_weeks (said why 0)

    def rate_at(self, wall: float) -> float:
        """The rate of the slot of the week that ``wall`` (epoch seconds) falls in, in local time."""
        return self.rates[slot_of(wall, self.timezone, self.bucket_s)]


def slot_of(wall: float, timezone: str, bucket_s: float) -> int:
    """The slot of the week (0: Monday 00:00 local) that holds ``wall``."""
    return _slot(datetime.fromtimestamp(wall, ZoneInfo(timezone)), bucket_s)


def _slot(local: datetime, bucket_s: float) -> int:
    since_monday = local.weekday() * 86400 + local.hour * 3600 + local.minute * 60 + local.second
    return int((since_monday + local.microsecond / 1e6) // bucket_s)


def learning_window(now_wall: float, cfg: PredictivePrewarmConfig) -> tuple[float, float]:
    """``(since, until)`` of the records :func:`learn_profile` reads: ``weeks`` weeks to the last bucket boundary."""
    until = math.floor(now_wall / cfg.bucket_s) * cfg.bucket_s
    return until - cfg.weeks * WEEK_S, until


def learn_profile(
    counts: Mapping[int, int],
    mean_duration_s: float,
    first_record: float | None,
    now_wall: float,
    timezone: str,
    cfg: PredictivePrewarmConfig,
) -> ArrivalProfile:
    """From arrivals per absolute bucket (index = floor(epoch seconds / bucket_s)) to rates per slot of the week."""
    bucket_s = cfg.bucket_s
    per_week = round(WEEK_S / bucket_s)
    end = math.floor(now_wall / bucket_s)  # the first bucket not over yet
    found = 0 if first_record is None else max(0, math.floor((end * bucket_s - first_record) / WEEK_S))
    weeks = min(cfg.weeks, found)
    if weeks < cfg.min_weeks:
        return ArrivalProfile(bucket_s, timezone, (0.0,) * per_week, mean_duration_s, 0, found)
    tz = ZoneInfo(timezone)  # a bucket belongs to the slot its start falls in, in local wall time
    samples: list[list[int]] = [[] for _ in range(per_week)]
    for index in range(end - weeks * per_week, end):
        samples[_slot(datetime.fromtimestamp(index * bucket_s, tz), bucket_s)].append(counts.get(index, 0))
    rates = tuple(statistics.median(s) / bucket_s if s else 0.0 for s in samples)
    return ArrivalProfile(bucket_s, timezone, rates, mean_duration_s, weeks, found)


@dataclass(frozen=True, slots=True)
class PrewarmInput:
    now_wall: float
    warm_replicas: int  # replicas ready or coming up
    cold_s: float  # measured seconds to bring a replica up from where it is (wake if sleeping, else start)
    usd_per_hour: float  # one replica
    linger_s: float | None  # idle seconds before the idle ladder takes a prewarmed replica down (None: never)
    capacity: int  # requests one replica serves at once
    target: float  # the autoscaler's per-replica target, as a fraction of capacity
    objective_s: float | None  # the tier's time-to-first-token objective (None: no tier or none set)


@dataclass(frozen=True, slots=True)
class PrewarmDecision:
    replicas: int  # replicas that should be up now ahead of the forecast (0: none)
    expected_arrivals: float  # arrivals expected within the horizon (cold_s + lead_s)
    wait_cost_usd: float  # expected cost of users waiting for a cold start if nothing is done
    idle_cost_usd: float  # expected cost of a replica idling until the first arrival
    reason: str


def prewarm_decision(profile: ArrivalProfile, inp: PrewarmInput, cfg: PredictivePrewarmConfig) -> PrewarmDecision:
    """How many replicas should be up now for the demand expected once a cold start is over (module docstring)."""
    if profile.weeks == 0:
        why = f"nothing learnt yet ({profile.weeks_of_records} whole weeks of records, need {cfg.min_weeks})"
        return PrewarmDecision(0, 0.0, 0.0, 0.0, why)
    cold = inp.cold_s
    horizon = cold + cfg.lead_s
    rate = profile.rate_at(inp.now_wall + horizon)
    during_start = rate * cold
    p = -math.expm1(-rate * horizon)
    wait_cost = p * (cold + during_start * cold / 2) * cfg.usd_per_waiting_s
    window = horizon if inp.linger_s is None else min(horizon, inp.linger_s)
    idle_s = -math.expm1(-rate * window) / rate if rate > 0 else window
    idle_cost = idle_s * inp.usd_per_hour / 3600
    rules = []
    if wait_cost > idle_cost:
        rules.append("waiting costs more than idling")
    objective_p = cfg.objective_probability
    if objective_p is not None and inp.objective_s is not None and cold > inp.objective_s and p >= objective_p:
        rules.append(f"a {cold:g}s start breaks the {inp.objective_s:g}s objective with p {p:.2f} >= {objective_p:g}")
    replicas = 0
    if rules:
        busy = rate * profile.mean_duration_s / (inp.capacity * inp.target)
        replicas = max(1, math.ceil(busy - _EPS))
    verdict = (
        f"prewarm {replicas}: " + " and ".join(rules) if rules else "no prewarm: waiting costs no more than idling"
    )
    reason = (
        f"{rate * 60:.3g}/min expected in {horizon:g}s, {during_start:.3g} during the {cold:g}s start: "
        f"waiting ${wait_cost:.4g} vs idling ${idle_cost:.4g}; {verdict}"
    )
    return PrewarmDecision(replicas, rate * horizon, wait_cost, idle_cost, reason)
