"""GPU cost attribution: from replica events and usage records to dollars per pool and per request.

Pure functions over plain rows (no database, no clock), so reports, tests and the simulator agree.

Billed time of a replica comes from its lifecycle events. ``on_demand``: the time it spends ``starting``,
``ready`` or ``sleeping`` (a sleeping vLLM still holds its GPU); ``reserved``: the whole window. A
replica that emitted no events at all (a static backend) is billed for at least the time it was busy.

Busy time is the union of its requests' [start, end] intervals. It is split among the requests in
flight at each instant in proportion to their token work density (prompt + completion tokens per second
of the request), so a long generation pays more than a short classification beside it. Cold-start time
(``starting``) and idle time (billed, neither busy nor starting) are overhead of the pool, not of any
request. Beside the actual bill: the ideal (busy time only) and always-on (every replica billed the
whole window).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ON_DEMAND_BILLED = frozenset({"starting", "ready", "sleeping"})


@dataclass(frozen=True)
class Price:
    usd_per_hour: float  # of one GPU
    count: int = 1  # GPUs per replica
    billing: str = "on_demand"

    @property
    def usd_per_s(self) -> float:
        return self.usd_per_hour * self.count / 3600


@dataclass
class PoolCost:
    pool: str
    window_s: float
    replicas: int = 0
    billed_s: float = 0.0  # replica-seconds billed
    busy_s: float = 0.0
    cold_start_s: float = 0.0
    cold_starts: int = 0  # successful starts and wakes
    failed_starts: int = 0
    usd_per_s: float = 0.0
    gpus: int = 1

    @property
    def idle_s(self) -> float:
        return max(0.0, self.billed_s - self.busy_s - self.cold_start_s)

    @property
    def gpu_hours(self) -> float:
        return self.billed_s * self.gpus / 3600

    @property
    def usd_billed(self) -> float:
        return self.billed_s * self.usd_per_s

    @property
    def usd_ideal(self) -> float:
        return self.busy_s * self.usd_per_s

    @property
    def usd_always_on(self) -> float:
        return self.window_s * max(1, self.replicas) * self.usd_per_s

    @property
    def utilisation(self) -> float | None:
        return self.busy_s / self.billed_s if self.billed_s > 0 else None


@dataclass
class Attribution:
    pools: dict[str, PoolCost] = field(default_factory=dict)
    # index into the records given -> (busy seconds attributed, dollars)
    shares: list[tuple[float, float]] = field(default_factory=list)


def _clip(a: float, b: float, lo: float, hi: float) -> float:
    return max(0.0, min(b, hi) - max(a, lo))


@dataclass(frozen=True)
class ReplicaTime:
    billed_s: float = 0.0
    starting_s: float = 0.0
    starts: int = 0  # starts and wakes that reached ``ready`` within the window
    failed_starts: int = 0  # starts and wakes that ended in any other state


def billed_time(events: Sequence[Mapping[str, Any]], since: float, until: float) -> ReplicaTime:
    """Billed and starting seconds, and starts, of ONE on-demand replica from its events, sorted by time.

    A start counts when it ends inside the window: ``starting -> ready`` succeeded, ``starting -> `` any
    other state (``failed``, ``stopped``) did not. One still starting at the window's end is not counted.
    """
    billed = starting = 0.0
    starts = failed = 0
    if not events:
        return ReplicaTime()
    state, t = events[0]["from_state"], since
    for ev in events:
        at = ev["time"]
        span = _clip(t, at, since, until)
        if state in ON_DEMAND_BILLED:
            billed += span
        if state == "starting":
            starting += span
        if ev["from_state"] == "starting" and since <= at < until:
            if ev["to_state"] == "ready":
                starts += 1
            else:
                failed += 1
        state, t = ev["to_state"], max(t, at)
    span = _clip(t, until, since, until)
    if state in ON_DEMAND_BILLED:
        billed += span
    if state == "starting":
        starting += span
    return ReplicaTime(billed, starting, starts, failed)


def _busy_and_shares(
    idx: Sequence[int], records: Sequence[Mapping[str, Any]], since: float, until: float
) -> tuple[float, dict[int, float]]:
    """Union of the requests' intervals on one replica, and each request's share of it."""
    points: list[tuple[float, int, int]] = []
    density: dict[int, float] = {}
    for i in idx:
        r = records[i]
        start, dur = r["time"], max(0.0, r.get("duration_s") or 0.0)
        end = start + dur
        if dur <= 0 or end <= since or start >= until:
            continue
        work = max(1, (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0))
        density[i] = work / dur
        points.append((max(start, since), 1, i))
        points.append((min(end, until), 0, i))  # ends sort before starts at the same instant
    points.sort()
    active: set[int] = set()
    total_density = 0.0
    busy = 0.0
    shares: dict[int, float] = defaultdict(float)
    last = None
    for at, kind, i in points:
        if last is not None and active and at > last:
            span = at - last
            busy += span
            for j in active:
                shares[j] += span * density[j] / total_density
        if kind == 1:
            active.add(i)
            total_density += density[i]
        else:
            active.discard(i)
            total_density -= density[i]
        last = at
    return busy, shares


def attribute(
    records: Sequence[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    prices: Mapping[str, Price],
    since: float,
    until: float,
) -> Attribution:
    """Bill every pool over [since, until) and give each record its share of its replica's busy time."""
    window = max(0.0, until - since)
    by_replica_events: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for ev in events:
        if ev["time"] < until:
            by_replica_events[(ev["pool"], ev["replica"])].append(ev)
    by_replica_records: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.get("pool"):
            by_replica_records[(r["pool"], r.get("replica") or "-")].append(i)

    out = Attribution(shares=[(0.0, 0.0)] * len(records))
    pool_names = set(prices) | {p for p, _ in by_replica_events} | {p for p, _ in by_replica_records}
    for name in sorted(pool_names):
        price = prices.get(name, Price(0.0))
        out.pools[name] = PoolCost(name, window, usd_per_s=price.usd_per_s, gpus=price.count)
    for pool, replica in set(by_replica_events) | set(by_replica_records):
        pc = out.pools[pool]
        price = prices.get(pool, Price(0.0))
        evs = sorted(by_replica_events.get((pool, replica), ()), key=lambda e: e["time"])
        busy, shares = _busy_and_shares(by_replica_records.get((pool, replica), ()), records, since, until)
        rt = billed_time(evs, since, until)
        billed = window if price.billing == "reserved" else rt.billed_s
        pc.replicas += 1
        pc.billed_s += max(billed, busy)
        pc.busy_s += busy
        pc.cold_start_s += rt.starting_s
        pc.cold_starts += rt.starts
        pc.failed_starts += rt.failed_starts
        for i, s in shares.items():
            out.shares[i] = (s, s * price.usd_per_s)
    for name, pc in out.pools.items():
        if pc.replicas == 0 and prices.get(name, Price(0.0)).billing == "reserved":
            pc.replicas, pc.billed_s = 1, window  # reserved capacity bills even when nobody used it
    return out
