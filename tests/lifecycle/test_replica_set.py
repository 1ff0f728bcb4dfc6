"""A managed pool of several replicas on a ManualClock with in-process fake backends (no processes):
leases spread over the ready ones, a removed replica drains before it stops, a held request brings up
exactly one replica, and prewarms are counted as used or expired."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from frugalserve import config as cfg
from frugalserve.clock import ManualClock
from frugalserve.errors import ServiceUnavailable
from frugalserve.events import RecentEvents, ScaleEvent
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from frugalserve.pools import Lease
from tests.lifecycle.fakes import FakeProvisioner, advance, settle
from tests.prom import samples, value


class World:
    def __init__(self) -> None:
        self.clock = ManualClock(1_700_000_000.0)
        self.events = RecentEvents()
        self.registry = CollectorRegistry()
        self.metrics = LifecycleMetrics(self.registry)
        self.provs: dict[str, FakeProvisioner] = {}
        self.pools: list[ManagedPool] = []

    def prov(self, name: str) -> FakeProvisioner:
        self.provs[name] = FakeProvisioner(self.clock, start_s=5.0)
        return self.provs[name]

    async def pool(self, replicas: str = "{min: 0, max: 3}", lifecycle: str = "{}") -> ManagedPool:
        text = (
            "pools: [{name: p, model: m, backend: {command: 'x {port}'}, capacity: 4, "
            f"replicas: {replicas}, lifecycle: {lifecycle}}}]"
        )
        pool = ManagedPool(cfg.load_text(text).pools[0], self.prov, self.clock, self.events, self.metrics)
        await pool.start()
        self.pools.append(pool)
        return pool

    async def advance(self, seconds: float, step: float = 0.25) -> None:
        await advance(self.clock, seconds, step)

    def transitions(self, replica: str) -> list[tuple[str, str, str]]:
        return [(e.from_state, e.to_state, e.reason) for e in self.events.events if e.replica == replica]

    def starts(self) -> int:
        return sum(p.calls.count("start") for p in self.provs.values())


@pytest.fixture
async def world():  # type: ignore[no-untyped-def]
    w = World()
    yield w
    for pool in w.pools:
        await pool.stop()


async def up(world: World, pool: ManagedPool, n: int) -> None:
    """Bring the pool to n ready replicas (n - 1 added by hand, as the autoscaler would)."""
    first = asyncio.ensure_future(pool.acquire())
    for _ in range(n - 1):
        await settle()
        assert pool.add("scale_up") is not None
    await world.advance(6.0)
    (await first).release()
    assert [r.state for r in pool.replicas] == ["ready"] * n


async def test_leases_go_to_the_replica_with_fewest_outstanding(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 3)
    leases = [await pool.acquire() for _ in range(6)]
    assert sorted(r.in_flight for r in pool.replicas) == [2, 2, 2]
    assert {lease.target.replica for lease in leases} == {"p-0", "p-1", "p-2"}
    for lease in leases:
        lease.release()


async def test_a_removed_replica_drains_its_requests_then_stops(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 2)
    busy = [await pool.acquire(), await pool.acquire()]  # one on each
    assert pool.remove("scale_down") is pool.replicas[1]  # equal load: the higher index goes
    await settle()
    assert pool.replicas[1].state == "ready" and pool.replicas[1].in_flight == 1  # still serving its request
    later: list[Lease] = [await pool.acquire() for _ in range(3)]
    assert {lease.target.replica for lease in later} == {"p-0"}  # nothing new goes to the draining one
    assert [r.name for r in pool.counted()] == ["p-0"]
    for lease in busy:
        lease.release()
    await world.advance(0.5)
    assert pool.replicas[1].state == "stopped"
    assert world.transitions("p-1")[-2:] == [("ready", "stopping", "scale_down"), ("stopping", "stopped", "scale_down")]
    assert pool.draining == set()
    for lease in later:
        lease.release()


async def test_held_requests_bring_up_one_replica_not_one_each(world: World) -> None:
    pool = await world.pool()
    waiting = [asyncio.ensure_future(pool.acquire()) for _ in range(5)]
    await world.advance(6.0)
    leases = [await w for w in waiting]
    assert world.starts() == 1 and [r.name for r in pool.replicas] == ["p-0"]
    assert all(lease.target.replica == "p-0" and lease.waited_s == pytest.approx(5.0, abs=0.3) for lease in leases)
    for lease in leases:
        lease.release()


async def test_a_held_request_takes_the_first_replica_ready_even_if_it_asked_another(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 2)
    await pool.sleep("admin")  # both asleep
    world.provs["p-0"].wake_s = 30.0  # p-0 wakes slowly
    held = asyncio.ensure_future(pool.acquire())
    await world.advance(0.5)
    pool.add("scale_up")  # p-1 wakes in 0.5 s
    await world.advance(1.0)
    assert held.done()
    lease = held.result()
    assert lease.target.replica == "p-1"
    lease.release()


async def test_a_failed_start_fails_held_requests_when_no_other_replica_is_coming(world: World) -> None:
    pool = await world.pool(replicas="{min: 0, max: 1}")
    world.provs["p-0"].fail_starts = 1
    held = [asyncio.ensure_future(pool.acquire()) for _ in range(3)]
    await world.advance(6.0)
    for h in held:
        with pytest.raises(ServiceUnavailable):
            h.result()
    assert pool.replica.state == "failed"


async def test_a_retry_avoiding_a_replica_goes_to_another(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 2)
    first = await pool.acquire()
    assert pool.replicas_besides({first.target.replica}) == 1
    second = await pool.acquire(exclude={first.target.replica})
    assert second.target.replica != first.target.replica
    first.release()
    second.release()


async def test_a_draining_replica_is_not_offered_to_a_retry(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 2)
    busy = [await pool.acquire(), await pool.acquire()]  # one on each
    victim = pool.remove("scale_down")
    assert victim is not None
    other = next(r.name for r in pool.replicas if r is not victim)
    # a request that failed on the other replica has nowhere else to go in this pool: the draining one
    # takes no new request
    assert pool.replicas_besides({other}) == 0
    for lease in busy:
        lease.release()


async def test_every_slot_in_use_means_add_returns_none(world: World) -> None:
    pool = await world.pool(replicas="{min: 0, max: 2}")
    assert pool.add("scale_up") is not None
    assert pool.add("scale_up") is not None
    assert pool.add("scale_up") is None
    await world.advance(6.0)
    assert len(pool.counted()) == 2


async def test_prewarms_are_counted_used_or_expired(world: World) -> None:
    pool = await world.pool(lifecycle="{idle_sleep_s: 60, idle_stop_s: null}")
    pool.add("prewarm", prewarm="cron")
    pool.add("prewarm", prewarm="predictive")
    await world.advance(6.0)
    lease = await pool.acquire()  # the first ready replica (p-0, cron) serves it
    lease.release()
    await world.advance(61.0)  # both idle past idle_sleep_s: they sleep
    assert [r.state for r in pool.replicas] == ["sleeping", "sleeping"]
    assert pool.prewarms == {"used": 1, "expired": 1}
    page = samples(generate_latest(world.registry).decode())
    assert value(page, "frugalserve_prewarms_total", pool="p", kind="cron", outcome="used") == 1
    assert value(page, "frugalserve_prewarms_total", pool="p", kind="predictive", outcome="expired") == 1
    outcomes = [(e.action, e.signal) for e in world.events.scale_events if isinstance(e, ScaleEvent)]
    assert outcomes == [("prewarm_used", "cron"), ("prewarm_expired", "predictive")]


async def test_a_pool_with_a_floor_keeps_its_replicas_out_of_the_idle_ladder(world: World) -> None:
    pool = await world.pool(replicas="{min: 1, max: 2}", lifecycle="{idle_sleep_s: 10, idle_stop_s: 20}")
    pool.add("scale_up")
    await world.advance(6.0)
    await world.advance(30.0)
    assert pool.replica.state == "ready"  # min 1: never put to sleep by the ladder


async def test_admin_view_lists_every_replica_and_which_is_being_removed(world: World) -> None:
    pool = await world.pool()
    await up(world, pool, 2)
    lease = await pool.acquire()
    victim = pool.remove("scale_down")
    assert victim is not None and victim.name != lease.target.replica  # the idle one goes first
    desc = pool.describe()  # at once: the drain is a task that has not run yet
    assert [(r["name"], r["state"], r["removing"]) for r in desc["replicas"]] == [
        ("p-0", "ready", victim.name == "p-0"),
        ("p-1", "ready", victim.name == "p-1"),
    ]
    assert (desc["replicas_min"], desc["replicas_max"]) == (0, 3)
    lease.release()


@pytest.mark.parametrize("turns", range(6))
async def test_a_request_that_arrives_as_the_replica_becomes_ready_is_served(world: World, turns: int) -> None:
    # The race CI hit once: a request finds nothing ready, and before its wait starts (a loop turn later) the
    # replica becomes ready. Nothing changes after that (no idle ladder here), so a wait that only watched for
    # the next change would hold the request until max_wait_s. Each `turns` shifts the start's end by one turn.
    pool = await world.pool("{min: 0, max: 1}", "{idle_sleep_s: null, idle_stop_s: null, max_wait_s: 60}")
    await pool.wake()
    await settle()
    assert pool.replica.state == "starting"
    held = asyncio.ensure_future(pool.acquire())
    for _ in range(turns):
        await asyncio.sleep(0)
    await world.clock.advance(5.0)
    await settle()
    assert held.done(), "the held request is still waiting although its replica is ready"
    (await held).release()
