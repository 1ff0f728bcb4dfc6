"""GPU cost attribution: from replica events and usage records to dollars per pool and per request.

Pure functions over plain rows (no database, no clock), so reports, tests and the simulator agree.

Billed time of a replica comes from its lifecycle events. ``on_demand``: the time it spends ``starting``,
``ready`` or ``sleeping`` (a sleeping vLLM still holds its GPU); ``reserved``: the whole window. A
replica is also billed whenever it ran a request (a static backend, with no events, is billed exactly that).

Busy time is the union of its requests' run spans, from dispatch (start + ``cold_start_wait_s``) to the
end, less the replica's ``starting`` spans (a starting replica serves nobody; this also drops the
moments a request spent being prepared before its wait began), so the wait for a cold start is not a
request's. It is split among the requests running at each
instant in proportion to their token work density (prompt + completion tokens per second of running),
so a long generation pays more than a short classification beside it. A record without a replica never
reached one (refused, or its client left during the wait): it holds no busy time. Cold-start time
(``starting``) and idle time (the rest) are overhead of the pool, not of any request;
busy + cold start + idle = billed. Beside the actual bill: the ideal (busy time only) and always-on
(every replica billed the whole window).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

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


class Share(NamedTuple):
    """One request's part of its replica's busy time."""

    busy_s: float  # replica-seconds
    usd: float
    gpu_s: float  # busy_s x GPUs per replica


NO_SHARE = Share(0.0, 0.0, 0.0)


@dataclass
class Attribution:
    pools: dict[str, PoolCost] = field(default_factory=dict)
    shares: list[Share] = field(default_factory=list)  # one per record given, in order


Span = tuple[float, float]


def _union(spans: Iterable[Span]) -> list[Span]:
    """Sorted, disjoint, non-empty spans covering the same instants."""
    out: list[Span] = []
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _length(spans: Sequence[Span]) -> float:
    return sum(b - a for a, b in spans)


def _overlap(xs: Sequence[Span], ys: Sequence[Span]) -> float:
    """Seconds in both of two unions (each from :func:`_union`)."""
    total, i, j = 0.0, 0, 0
    while i < len(xs) and j < len(ys):
        total += max(0.0, min(xs[i][1], ys[j][1]) - max(xs[i][0], ys[j][0]))
        if xs[i][1] < ys[j][1]:
            i += 1
        else:
            j += 1
    return total


@dataclass(frozen=True)
class ReplicaTime:
    billed_s: float = 0.0
    starting_s: float = 0.0
    starts: int = 0  # starts and wakes that reached ``ready`` within the window
    failed_starts: int = 0  # starts and wakes that ended in any other state


@dataclass(frozen=True)
class ReplicaSpans:
    billed: list[Span]
    starting: list[Span]
    starts: int = 0
    failed_starts: int = 0


def replica_spans(events: Sequence[Mapping[str, Any]], since: float, until: float) -> ReplicaSpans:
    """When ONE on-demand replica was billed and starting within the window, from its events sorted by time.

    A start counts when it ends inside the window: ``starting -> ready`` succeeded, ``starting -> `` any
    other state (``failed``, ``stopped``) did not. One still starting at the window's end is not counted.
    """
    billed: list[Span] = []
    starting: list[Span] = []
    starts = failed = 0
    if not events:
        return ReplicaSpans([], [])
    state, t = events[0]["from_state"], since

    def close(state: str, a: float, b: float) -> None:
        a, b = max(a, since), min(b, until)
        if b > a and state in ON_DEMAND_BILLED:
            billed.append((a, b))
        if b > a and state == "starting":
            starting.append((a, b))

    for ev in events:
        at = ev["time"]
        close(state, t, at)
        if ev["from_state"] == "starting" and since <= at < until:
            if ev["to_state"] == "ready":
                starts += 1
            else:
                failed += 1
        state, t = ev["to_state"], max(t, at)
    close(state, t, until)
    return ReplicaSpans(_union(billed), _union(starting), starts, failed)


def billed_time(events: Sequence[Mapping[str, Any]], since: float, until: float) -> ReplicaTime:
    """Billed and starting seconds, and starts, of ONE on-demand replica (see :func:`replica_spans`)."""
    s = replica_spans(events, since, until)
    return ReplicaTime(_length(s.billed), _length(s.starting), s.starts, s.failed_starts)


def run_span(r: Mapping[str, Any]) -> Span:
    """When a request occupied its replica: from its dispatch (after any cold-start wait) to its end."""
    start = r["time"]
    return start + max(0.0, r.get("cold_start_wait_s") or 0.0), start + max(0.0, r.get("duration_s") or 0.0)


def _busy_and_shares(
    idx: Sequence[int],
    records: Sequence[Mapping[str, Any]],
    starting: Sequence[Span],
    since: float,
    until: float,
) -> tuple[list[Span], dict[int, float]]:
    """Union of the requests' run spans on one replica outside its ``starting`` spans (a replica that is
    starting serves nobody), and each request's share of it."""
    points: list[tuple[float, int, int]] = []  # (instant, 0 end / 1 start / 2 block ends / 3 block starts, i)
    density: dict[int, float] = {}
    for a, b in starting:
        points += [(a, 3, -1), (b, 2, -1)]
    for i in idx:
        r = records[i]
        start, end = run_span(r)
        ran = (end - start) - _overlap([(start, end)], starting)
        if ran <= 0 or end <= since or start >= until:
            continue
        work = max(1, (r.get("prompt_tokens") or 0) + (r.get("completion_tokens") or 0))
        density[i] = work / ran
        points.append((max(start, since), 1, i))
        points.append((min(end, until), 0, i))  # ends sort before starts at the same instant
    points.sort()
    active: set[int] = set()
    blocked = 0
    total_density = 0.0
    busy: list[Span] = []
    shares: dict[int, float] = defaultdict(float)
    last = None
    for at, kind, i in points:
        if last is not None and active and not blocked and at > last:
            span = at - last
            busy.append((last, at))
            for j in active:
                shares[j] += span * density[j] / total_density
        if kind == 3:
            blocked += 1
        elif kind == 2:
            blocked -= 1
        elif kind == 1:
            active.add(i)
            total_density += density[i]
        else:
            active.discard(i)
            total_density -= density[i]
        last = at
    return _union(busy), shares


def attribute(
    records: Sequence[Mapping[str, Any]],
    events: Iterable[Mapping[str, Any]],
    prices: Mapping[str, Price],
    since: float,
    until: float,
) -> Attribution:
    """Bill every pool over [since, until) and give each record its share of its replica's busy time.

    Per replica, busy, cold-start and idle seconds partition the billed seconds: billed is the union of
    the billed spans (events, or the window when reserved) and the busy spans; cold start is the time
    ``starting`` (no request runs then, whatever its record says); busy is run time outside it; idle is
    the rest.
    """
    window = max(0.0, until - since)
    by_replica_events: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    for ev in events:
        if ev["time"] < until:
            by_replica_events[(ev["pool"], ev["replica"])].append(ev)
    by_replica_records: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if r.get("pool") and r.get("replica"):  # without a replica it never reached one (refused, gave up)
            by_replica_records[(r["pool"], r["replica"])].append(i)

    out = Attribution(shares=[NO_SHARE] * len(records))
    pool_names = set(prices) | {p for p, _ in by_replica_events} | {p for p, _ in by_replica_records}
    for name in sorted(pool_names):
        price = prices.get(name, Price(0.0))
        out.pools[name] = PoolCost(name, window, usd_per_s=price.usd_per_s, gpus=price.count)
    for pool, replica in set(by_replica_events) | set(by_replica_records):
        pc = out.pools[pool]
        price = prices.get(pool, Price(0.0))
        evs = sorted(by_replica_events.get((pool, replica), ()), key=lambda e: e["time"])
        rs = replica_spans(evs, since, until)
        mine = by_replica_records.get((pool, replica), ())
        busy, shares = _busy_and_shares(mine, records, rs.starting, since, until)
        billed = [(since, until)] if price.billing == "reserved" else rs.billed
        pc.replicas += 1
        pc.billed_s += _length(_union([*billed, *busy]))
        pc.busy_s += _length(busy)
        pc.cold_start_s += _length(rs.starting)
        pc.cold_starts += rs.starts
        pc.failed_starts += rs.failed_starts
        for i, s in shares.items():
            out.shares[i] = Share(s, s * price.usd_per_s, s * price.count)
    for name, pc in out.pools.items():
        if pc.replicas == 0 and prices.get(name, Price(0.0)).billing == "reserved":
            pc.replicas, pc.billed_s = 1, window  # reserved capacity bills even when nobody used it
    return out
