"""Dollars as they are spent: each replica's billed seconds, integrated live from its state and load.

The bill is ``frugalserve report``, computed from the stored lifecycle events and usage records by
:mod:`frugalserve.accounting.costs`; this is its live view for ``/metrics``, by the same rules:

- on demand, a replica is billed while ``starting`` (cold start), ``ready`` (busy while it serves at least
  one request, idle otherwise) and ``sleeping`` (idle: a sleeping vLLM still holds its GPU);
- a url backend (state ``external``) on demand is billed only while it serves, as the report bills it;
- a reserved GPU is billed always: what is not busy or starting is idle.

Each replica's owner tells its :class:`BilledClock` when the state changes and when the replica goes from
idle to busy and back (not on every request), so the request path pays two attribute writes at most.
The collector adds the open span up to the moment of the scrape.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from frugalserve.accounting.costs import ON_DEMAND_BILLED
from frugalserve.clock import Clock
from frugalserve.config import PoolConfig
from frugalserve.metrics.collector import ScrapeCollector

# Every state a replica is reported in (``external``: a url backend someone else runs).
STATES = ("stopped", "starting", "ready", "sleeping", "stopping", "failed", "external")
KINDS = ("busy", "idle", "cold_start")


@dataclass(frozen=True, slots=True)
class BilledSeconds:
    busy: float = 0.0
    idle: float = 0.0
    cold_start: float = 0.0

    @property
    def total(self) -> float:
        return self.busy + self.idle + self.cold_start


class BilledClock:
    """Billed seconds of ONE replica, by kind. Its owner calls :meth:`state` and :meth:`busy`."""

    __slots__ = ("_acc", "_busy", "_clock", "_reserved", "_since", "_state")

    def __init__(self, clock: Clock, config: PoolConfig, state: str) -> None:
        self._clock = clock
        self._reserved = config.gpu.billing == "reserved"
        self._state = state
        self._busy = False
        self._since = clock.monotonic()
        self._acc = [0.0, 0.0, 0.0]  # busy, idle, cold_start

    @property
    def current_state(self) -> str:
        return self._state

    def state(self, to: str) -> None:
        self._close()
        self._state = to

    def busy(self, busy: bool) -> None:
        if busy != self._busy:
            self._close()
            self._busy = busy

    def billing_now(self) -> bool:
        return self._kind() is not None

    def seconds(self) -> BilledSeconds:
        """Billed seconds so far, the open span included."""
        acc = list(self._acc)
        kind = self._kind()
        if kind is not None:
            acc[kind] += max(0.0, self._clock.monotonic() - self._since)
        return BilledSeconds(*acc)

    def _kind(self) -> int | None:
        """Index into the totals of what the current span is billed as; None: not billed."""
        state = self._state
        if state == "starting":
            return 2
        if state in ("ready", "external") and self._busy:
            return 0
        if self._reserved or state in ON_DEMAND_BILLED:
            return 1
        return None

    def _close(self) -> None:
        now = self._clock.monotonic()
        kind = self._kind()
        if kind is not None:
            self._acc[kind] += max(0.0, now - self._since)
        self._since = now


@dataclass(slots=True)
class _PoolMeter:
    config: PoolConfig
    usd_per_s: float  # one replica
    replicas: list[BilledClock]


class CostMeter(ScrapeCollector):
    """The gateway's billed clocks, and the cost and replica-state series computed from them at scrape time."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = clock.monotonic()
        self._pools: dict[str, _PoolMeter] = {}

    def add(self, config: PoolConfig, billed: BilledClock) -> None:
        """Count ``billed`` (one replica of ``config``'s pool) from now on."""
        meter = self._pools.get(config.name)
        if meter is None:
            usd_per_s = config.gpu.usd_per_hour * config.gpu.count / 3600
            meter = self._pools[config.name] = _PoolMeter(config, usd_per_s, [])
        meter.replicas.append(billed)

    def families(self, collecting: bool) -> Iterator[Metric]:
        cost = CounterMetricFamily(
            "frugalserve_cost_usd",
            "Dollars billed since the gateway started, by pool and kind.",
            labels=["pool", "kind"],
        )
        burn = GaugeMetricFamily(
            "frugalserve_cost_burn_usd_per_hour", "What the pool costs per hour right now.", labels=["pool"]
        )
        always_on = CounterMetricFamily(
            "frugalserve_cost_always_on_usd",
            "What the pool's replicas would have cost always on, since the gateway started.",
            labels=["pool"],
        )
        savings = CounterMetricFamily(
            "frugalserve_savings_usd",
            "Always-on cost less the billed cost, since the gateway started.",
            labels=["pool"],
        )
        replicas = GaugeMetricFamily("frugalserve_replicas", "Replicas by pool and state.", labels=["pool", "state"])
        if collecting:
            window = max(0.0, self.clock.monotonic() - self.started)
            for name, meter in self._pools.items():
                s = _sum(r.seconds() for r in meter.replicas)
                price = meter.usd_per_s
                for kind, seconds in zip(KINDS, (s.busy, s.idle, s.cold_start), strict=True):
                    cost.add_metric([name, kind], seconds * price)
                billing = sum(r.billing_now() for r in meter.replicas)
                burn.add_metric([name], billing * price * 3600)
                whole = window * max(1, len(meter.replicas)) * price
                always_on.add_metric([name], whole)
                # never negative: a counter; billed can exceed always-on only by clock jitter
                savings.add_metric([name], max(0.0, whole - s.total * price))
                counts = dict.fromkeys(STATES, 0)
                for r in meter.replicas:
                    counts[r.current_state] = counts.get(r.current_state, 0) + 1
                for state, n in counts.items():
                    replicas.add_metric([name, state], n)
        yield from (cost, burn, always_on, savings, replicas)


def _sum(parts: Iterable[BilledSeconds]) -> BilledSeconds:
    busy = idle = cold = 0.0
    for p in parts:
        busy += p.busy
        idle += p.idle
        cold += p.cold_start
    return BilledSeconds(busy, idle, cold)
