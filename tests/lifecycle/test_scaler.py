"""The autoscaler's effect loop on a ManualClock with in-process fake backends: it follows the load up and
down, replaces a crashed replica, reports a refused placement, and prewarms ahead of a learnt peak. The
policy itself has its own table tests (test_autoscale_policy.py); here every decision must also reach the
pool, the events and /metrics."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from frugalserve import config as cfg
from frugalserve.accounting.arrivals import Arrivals
from frugalserve.clock import ManualClock
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from frugalserve.lifecycle.prewarm import WEEK_S, slot_of
from frugalserve.lifecycle.scaler import PoolScaler, ScaleSignals
from frugalserve.pools import Lease
from tests import procs
from tests.lifecycle.fakes import FakeProvisioner, advance
from tests.prom import samples, value

# Short windows so that a test walks through a whole cycle in a few simulated minutes.
AUTOSCALE = (
    "{target: 0.5, stable_window_s: 10, panic_window_s: 2, interval_s: 1, scale_down_cooldown_s: 5, "
    "max_scale_down_rate: 2}"
)
NOW = 1_700_000_000.0  # a Tuesday, 22:13:20 UTC


class World:
    def __init__(self) -> None:
        self.clock = ManualClock(NOW)
        self.events = RecentEvents()
        self.registry = CollectorRegistry()
        self.metrics = LifecycleMetrics(self.registry)
        self.provs: dict[str, FakeProvisioner] = {}
        self.pools: list[ManagedPool] = []

    def prov(self, name: str) -> FakeProvisioner:
        self.provs.setdefault(name, FakeProvisioner(self.clock, start_s=5.0))
        return self.provs[name]

    async def pool(
        self,
        replicas: str = "{min: 0, max: 3}",
        lifecycle: str = "{idle_sleep_s: 60, idle_stop_s: null}",
        arrivals: object = None,
    ) -> ManagedPool:
        text = (
            "pools: [{name: p, model: m, backend: {command: 'x {port}'}, capacity: 4, "
            f"replicas: {replicas}, lifecycle: {lifecycle}, autoscale: {AUTOSCALE}, "
            "gpu: {usd_per_hour: 1.0}}]"
        )
        config = cfg.load_text(text)
        pool = ManagedPool(config.pools[0], self.prov, self.clock, self.events, self.metrics)
        pool.scaler = PoolScaler(
            pool,
            ScaleSignals(),
            self.clock,
            self.events,
            self.metrics,
            config.routing,
            arrivals,  # type: ignore[arg-type]
        )
        await pool.start()
        self.pools.append(pool)
        return pool

    async def advance(self, seconds: float, step: float = 0.25) -> None:
        await advance(self.clock, seconds, step)

    def scale_events(self) -> list[tuple[str, int, int]]:
        return [(e.action, e.from_replicas, e.to_replicas) for e in self.events.scale_events]

    def page(self) -> dict:  # type: ignore[type-arg]
        return samples(generate_latest(self.registry).decode())


@pytest.fixture
async def world():  # type: ignore[no-untyped-def]
    w = World()
    yield w
    for pool in w.pools:
        await pool.stop()


async def burst(world: World, pool: ManagedPool, n: int = 10) -> list[Lease]:
    """n requests at once on a cold pool: held until a replica is ready, then all served."""
    held = [asyncio.ensure_future(pool.acquire()) for _ in range(n)]
    await world.advance(7.0)
    return [await h for h in held]


async def test_replicas_follow_a_burst_up_then_back_down_to_zero(world: World) -> None:
    pool = await world.pool()
    # 10 held requests on a cold pool: 10/4 = 2.5 replicas' worth; at a target of 0.5 per replica that
    # wants 5, capped at max 3.
    leases = await burst(world, pool)
    assert [r.state for r in pool.replicas] == ["ready"] * 3
    assert sum(r.in_flight for r in pool.replicas) == 10
    # a burst: the panic window wants 5 >= 2 x the 1 replica the first held request had started already
    assert world.scale_events()[:2] == [("panic", 1, 3), ("scale_up", 1, 3)]
    assert value(world.page(), "frugalserve_autoscale_desired_replicas", pool="p") == 3
    # New requests go to the least loaded replicas (the held ones all went to the first one ready).
    more = [await pool.acquire() for _ in range(4)]
    assert {lease.target.replica for lease in more} <= {"p-1", "p-2"}
    # The burst ends: after the stable window empties and the cooldown passes, it scales down, at most
    # halving per decision, and never below one replica on its own.
    for lease in leases + more:
        lease.release()
    await world.advance(30.0)
    assert len(pool.counted()) == 1
    downs = [e for e in world.scale_events() if e[0] == "scale_down"]
    assert downs and all(to >= frm // 2 for _, frm, to in downs)
    assert [r.state for r in pool.replicas].count("stopped") == 2
    # The last replica goes to zero through the idle ladder (sleep after 60 idle seconds).
    await world.advance(40.0)
    assert [r.state for r in pool.replicas].count("sleeping") == 1 and pool.counted() == []
    page = world.page()
    assert value(page, "frugalserve_autoscale_desired_replicas", pool="p") == 0
    ups = [
        v
        for (n, ls), v in page.items()
        if n == "frugalserve_autoscale_decisions_total" and ("action", "scale_up") in ls
    ]
    assert sum(ups) >= 1


async def test_a_replica_removed_with_a_request_on_it_drains_before_it_stops(world: World) -> None:
    pool = await world.pool()
    leases = await burst(world, pool)
    spread = [await pool.acquire() for _ in range(2)]  # one on p-1, one on p-2
    for lease in leases:
        lease.release()
    # 2 requests in flight: 0.5 replicas' worth -> 1 replica wanted; p-1 and p-2 each still run one.
    await world.advance(20.0)
    victims = [r for r in pool.replicas if r.name in pool.draining]
    assert victims and all(r.state == "ready" and r.in_flight == 1 for r in victims)
    for lease in spread:
        lease.release()
    await world.advance(1.0)
    assert len(pool.counted()) == 1 and pool.draining == set()
    stops = [(e.replica, e.reason) for e in world.events.events if e.to_state == "stopped"]
    assert {v.name for v in victims} <= {r for r, reason in stops if reason == "scale_down"}


async def test_a_crashed_replica_of_a_pool_with_a_floor_is_replaced(world: World) -> None:
    pool = await world.pool(replicas="{min: 2, max: 2}")
    await world.advance(6.0)  # the floor brings both up at once
    assert [r.state for r in pool.replicas] == ["ready", "ready"]
    world.provs["p-1"].crash()
    await world.advance(0.5)
    assert pool.replicas[1].state == "failed"
    await world.advance(7.0)
    assert [r.state for r in pool.replicas] == ["ready", "ready"]
    assert world.provs["p-1"].calls.count("start") == 2
    reasons = [(e.action, e.signal) for e in world.events.scale_events]
    assert ("scale_up", "min") in reasons


async def test_a_refused_placement_is_an_event_and_a_metric(world: World) -> None:
    pool = await world.pool(replicas="{min: 1, max: 1}")
    world.prov("p-0").refuse_starts = 1
    await world.advance(0.5)
    refused = [e for e in world.events.scale_events if e.action == "refused"]
    assert len(refused) == 1 and refused[0].signal == "placement" and "no node with 1 free GPU" in refused[0].reason
    assert (
        value(world.page(), "frugalserve_autoscale_decisions_total", pool="p", action="refused", signal="placement")
        == 1
    )
    await world.advance(8.0)  # tried again after the backoff: placed this time
    assert pool.replica.state == "ready"


async def test_predictive_prewarm_wakes_a_replica_ahead_of_a_learnt_peak_and_it_is_used(world: World) -> None:
    bucket = 900.0
    # One arrival per second, every week for four weeks, in the slot the pool would be ready in.
    peak_slot = slot_of(NOW + 60.0, "UTC", bucket)

    def arrivals(pool: str, since: float, until: float, bucket_s: float) -> Arrivals:
        assert (pool, bucket_s) == ("p", bucket)
        counts = {}
        b = int(since // bucket)
        while b * bucket < until:
            if slot_of(b * bucket, "UTC", bucket) == peak_slot:
                counts[b] = 900
            b += 1
        return Arrivals(counts=counts, mean_duration_s=2.0, first_record=since - WEEK_S)

    pool = await world.pool(
        lifecycle="{idle_sleep_s: 60, idle_stop_s: null, predictive_prewarm: {enabled: true, lead_s: 30}}",
        arrivals=arrivals,
    )
    await world.advance(0.25)  # the first tick reads the arrivals, in a thread: wait for it in real time
    await procs.eventually(lambda: pool.scaler.profile is not None and pool.scaler.profile.weeks > 0, 10, "learnt")
    await world.advance(5.75)
    assert pool.replica.state == "ready" and pool.replica.prewarmed == "predictive"
    prewarm = [e for e in world.events.scale_events if e.action == "prewarm"]
    assert len(prewarm) == 1 and prewarm[0].signal == "floor"
    lease = await pool.acquire()
    assert lease.waited_s == 0.0
    lease.release()
    assert pool.prewarms["used"] == 1
    forecast = pool.describe()["autoscale"]["forecast"]
    assert forecast["replicas"] >= 1 and forecast["weeks_learnt"] == 4


async def test_a_predictive_prewarm_that_expires_unused_is_not_repeated_in_the_same_slot(world: World) -> None:
    bucket = 900.0

    def arrivals(pool: str, since: float, until: float, bucket_s: float) -> Arrivals:
        # every slot busy in the past: the forecast always says prewarm
        counts = {b: 900 for b in range(int(since // bucket), int(until // bucket))}
        return Arrivals(counts=counts, mean_duration_s=2.0, first_record=since - WEEK_S)

    pool = await world.pool(
        lifecycle="{idle_sleep_s: 60, idle_stop_s: null, predictive_prewarm: {enabled: true}}", arrivals=arrivals
    )
    await world.advance(0.25)  # the first tick reads the arrivals, in a thread: wait for it in real time
    await procs.eventually(lambda: pool.scaler.profile is not None and pool.scaler.profile.weeks > 0, 10, "learnt")
    await world.advance(5.75)
    assert pool.replica.state == "ready" and pool.replica.prewarmed == "predictive"
    await world.advance(70.0)  # nobody came: the idle ladder puts it to sleep, the prewarm expired
    assert pool.replica.state == "sleeping" and pool.prewarms == {"used": 0, "expired": 1}
    await world.advance(20.0)  # NOW + 96 s: still in the 22:00-22:15 slot, no second prewarm
    assert pool.replica.state == "sleeping"
    assert [e.action for e in world.events.scale_events].count("prewarm") == 1
    await world.advance(6.0)  # NOW + 102 s: the next slot, whose forecast is its own
    assert [e.action for e in world.events.scale_events].count("prewarm") == 2
