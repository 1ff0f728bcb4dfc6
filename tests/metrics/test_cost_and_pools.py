"""The live cost series, replicas by state, pool utilisation and budgets, with hand-computed values.

A managed pool runs through start, busy, idle, sleep, wake and stop on a manual clock with the lifecycle's
own fake provisioner (a process start takes no time here); every dollar below is worked out by hand from
the price and the seconds spent in each state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from frugalserve import config as cfg
from frugalserve.accounting.auth import Gate
from frugalserve.accounting.config import AccountingConfig, AuthConfig
from frugalserve.accounting.keys import ApiKey
from frugalserve.clock import ManualClock
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from frugalserve.metrics.budgets import BudgetsCollector
from frugalserve.metrics.cost import CostMeter
from frugalserve.metrics.pools import PoolsCollector
from frugalserve.pools import StaticPool
from tests import prom
from tests.lifecycle.fakes import FakeProvisioner, settle

USD_PER_HOUR = 3.6  # $0.001 a second: seconds read as thousandths of a dollar


def _values(registry: CollectorRegistry) -> prom.Samples:
    return prom.samples(generate_latest(registry).decode())


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.registry = CollectorRegistry()
        self.metrics = LifecycleMetrics(self.registry, CostMeter(self.clock))
        self.pools: list[ManagedPool] = []

    async def managed(self, prov: FakeProvisioner, billing: str = "on_demand") -> ManagedPool:
        text = (
            "pools: [{name: p, model: m, tier: M, capacity: 4, backend: {command: 'x {port}'},"
            f" gpu: {{usd_per_hour: {USD_PER_HOUR}, billing: {billing}}},"
            " lifecycle: {idle_sleep_s: 20, idle_stop_s: 100, sleep_level: 2}}]"
        )
        pool = ManagedPool(cfg.load_text(text).pools[0], lambda _name: prov, self.clock, RecentEvents(), self.metrics)
        await pool.start()
        self.pools.append(pool)
        return pool

    async def advance(self, seconds: float, step: float = 0.5) -> None:
        await settle()
        while seconds > 1e-9:
            await self.clock.advance(min(step, seconds))
            seconds -= step
            await settle()

    def values(self) -> prom.Samples:
        return _values(self.registry)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    for p in w.pools:
        await p.stop()


def _cost(world: World, kind: str) -> float:
    value = prom.value(world.values(), "frugalserve_cost_usd_total", pool="p", kind=kind)
    assert value is not None
    return value


async def test_on_demand_pool_is_billed_by_state_and_load(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=10, wake_s=4)
    pool = await world.managed(prov)
    await world.advance(50)  # stopped: nothing billed
    assert [_cost(world, k) for k in ("busy", "idle", "cold_start")] == [0, 0, 0]

    first = asyncio.ensure_future(pool.acquire())
    await world.advance(10)  # the start: 10 s of cold start
    lease = await first
    await world.advance(6)  # serving one request: 6 s busy
    second = await pool.acquire()
    await world.advance(2)  # two at once: still 2 s of ONE replica busy
    lease.release()
    second.release()
    await world.advance(20)  # idle 20 s, then it sleeps (level 2)
    assert pool.replica.state == "sleeping"
    await world.advance(30)  # sleeping: billed as idle (a sleeping vLLM holds its GPU)
    values = world.values()
    assert prom.value(values, "frugalserve_cost_burn_usd_per_hour", pool="p") == pytest.approx(USD_PER_HOUR)
    assert prom.value(values, "frugalserve_replicas", pool="p", state="sleeping") == 1
    assert prom.value(values, "frugalserve_replicas", pool="p", state="ready") == 0

    woke = asyncio.ensure_future(pool.acquire())
    await world.advance(4)  # a wake: 4 s of cold start
    (await woke).release()
    await world.advance(20)  # idle 20 s, sleeps again
    await world.advance(100)  # and stops after 100 idle seconds (20 of them slept above)
    assert pool.replica.state == "stopped"
    await world.advance(40)  # stopped: nothing

    assert _cost(world, "cold_start") == pytest.approx((10 + 4) * 0.001, abs=0.002)
    assert _cost(world, "busy") == pytest.approx(8 * 0.001, abs=0.001)
    # idle: 20 (after busy) + 30 (asleep) + 20 (after the wake) + 80 (asleep until the stop at 100 s idle)
    assert _cost(world, "idle") == pytest.approx((20 + 30 + 20 + 80) * 0.001, abs=0.002)
    values = world.values()
    assert prom.value(values, "frugalserve_cost_burn_usd_per_hour", pool="p") == 0
    window = world.clock.monotonic()
    assert prom.value(values, "frugalserve_cost_always_on_usd_total", pool="p") == pytest.approx(window * 0.001)
    billed = sum(_cost(world, k) for k in ("busy", "idle", "cold_start"))
    assert prom.value(values, "frugalserve_savings_usd_total", pool="p") == pytest.approx(window * 0.001 - billed)
    # the starts by level: one start (level 0), one wake from level 2
    assert prom.value(values, "frugalserve_cold_starts_total", pool="p", kind="start", level="0") == 1
    assert prom.value(values, "frugalserve_cold_starts_total", pool="p", kind="wake", level="2") == 1


async def test_reserved_pool_is_billed_always_and_saves_nothing(world: World) -> None:
    pool = await world.managed(FakeProvisioner(world.clock, start_s=5), billing="reserved")
    await world.advance(10)  # stopped, but reserved: idle
    lease = await asyncio.ensure_future(_acquire_after(world, pool, 5))
    await world.advance(3)
    lease.release()
    await world.advance(2)
    assert _cost(world, "cold_start") == pytest.approx(0.005, abs=0.001)
    assert _cost(world, "busy") == pytest.approx(0.003, abs=0.001)
    assert _cost(world, "idle") == pytest.approx(0.012, abs=0.001)
    assert prom.value(world.values(), "frugalserve_savings_usd_total", pool="p") == pytest.approx(0, abs=1e-9)


async def _acquire_after(world: World, pool: ManagedPool, start_s: float):  # type: ignore[no-untyped-def]
    pending = asyncio.ensure_future(pool.acquire())
    await world.advance(start_s)
    return await pending


def test_url_backend_on_demand_is_billed_only_while_it_serves() -> None:
    clock = ManualClock()
    registry = CollectorRegistry()
    meter = CostMeter(clock)
    registry.register(meter)
    text = (
        "pools: [{name: p, model: m, backend: {urls: ['http://127.0.0.1:9/v1', 'http://127.0.0.1:10/v1']},"
        f" gpu: {{usd_per_hour: {USD_PER_HOUR}}}}}]"
    )
    pool = StaticPool(cfg.load_text(text).pools[0], meter=meter)

    async def run() -> None:
        clock._now = 10.0  # a manual clock set directly: nothing sleeps here
        a = await pool.acquire()
        b = await pool.acquire()  # the other replica (least outstanding)
        clock._now = 13.0
        a.release()
        clock._now = 17.0
        b.release()
        clock._now = 30.0

    asyncio.run(run())
    values = _values(registry)
    # replica 0 served 3 s, replica 1 served 7 s; idle url backends cost nothing
    assert prom.value(values, "frugalserve_cost_usd_total", pool="p", kind="busy") == pytest.approx(0.010)
    assert prom.value(values, "frugalserve_cost_usd_total", pool="p", kind="idle") == 0
    assert prom.value(values, "frugalserve_replicas", pool="p", state="external") == 2
    assert prom.value(values, "frugalserve_cost_always_on_usd_total", pool="p") == pytest.approx(30 * 2 * 0.001)


async def test_pool_utilisation_band_and_objective_come_from_the_view_and_routing() -> None:
    text = """
routing:
  per_tier: [{tier: S, slo_ms: 800, utilisation: [0.4, 0.7]}]
pools:
  - {name: s, model: ms, tier: S, capacity: 4, backend: {urls: ['http://127.0.0.1:9/v1', 'http://127.0.0.1:10/v1']},
     gpu: {type: L4, billing: reserved}}
  - {name: plain, model: mp, backend: {url: 'http://127.0.0.1:11/v1'}}
"""
    config = cfg.load_text(text)
    clock = ManualClock()
    pools = [StaticPool(p) for p in config.pools]
    registry = CollectorRegistry()
    registry.register(PoolsCollector(config, pools, clock))
    leases = [await pools[0].acquire() for _ in range(3)]
    values = _values(registry)
    assert prom.value(values, "frugalserve_pool_utilization_ratio", pool="s") == pytest.approx(3 / (4 * 2))
    assert prom.value(values, "frugalserve_pool_utilization_ratio", pool="plain") == 0
    assert prom.value(values, "frugalserve_pool_utilization_target_ratio", pool="s", bound="low") == 0.4
    assert prom.value(values, "frugalserve_pool_utilization_target_ratio", pool="s", bound="high") == 0.7
    assert prom.value(values, "frugalserve_pool_utilization_target_ratio", pool="plain", bound="low") is None
    assert prom.value(values, "frugalserve_tier_ttft_objective_seconds", tier="S") == 0.8
    assert prom.value(values, "frugalserve_tier_ttft_objective_seconds", tier="M") == 2.0  # the default objective
    info = dict(pool="s", tier="S", model="ms", gpu_type="L4", billing="reserved")
    assert prom.value(values, "frugalserve_pool_info", **info) == 1
    for lease in leases:
        lease.release()


def test_budget_remaining_per_key_and_seconds_to_reset() -> None:
    clock = ManualClock(start_wall=1_700_000_000.0)  # 2023-11-14 22:13:20 UTC
    gate = Gate(None, AuthConfig(enabled=True), AccountingConfig(), clock)
    gate.keys = {
        "k1": ApiKey(
            id="k1",
            name="team-a",
            secret_hash="h-fs-a",
            prefix="fs-a",
            created_at=0.0,
            budget_usd_per_day=10.0,
            budget_usd_per_month=100.0,
        ),
        "k2": ApiKey(
            id="k2", name="team-b", secret_hash="h-fs-b", prefix="fs-b", created_at=0.0
        ),  # no budget: no series
        "k3": ApiKey(
            id="k3aaaaaaaa", name="dup", secret_hash="h-fs-c", prefix="fs-c", created_at=0.0, budget_usd_per_day=1.0
        ),
        "k4": ApiKey(
            id="k4bbbbbbbb", name="dup", secret_hash="h-fs-d", prefix="fs-d", created_at=0.0, budget_usd_per_day=2.0
        ),
    }
    gate.spend.charge("k1", 2.5, clock.wall(), seq=1)
    gate.spend.charge("k1", 1.0, clock.wall() - 86400, seq=2)  # yesterday: this month, not today
    gate.spend.charge("k3aaaaaaaa", 5.0, clock.wall(), seq=3)  # over budget: 0 left, never negative
    registry = CollectorRegistry()
    registry.register(BudgetsCollector(gate))
    values = _values(registry)
    assert prom.value(values, "frugalserve_budget_limit_usd", key="team-a", period="day") == 10.0
    assert prom.value(values, "frugalserve_budget_remaining_usd", key="team-a", period="day") == 7.5
    assert prom.value(values, "frugalserve_budget_remaining_usd", key="team-a", period="month") == 96.5
    assert not [k for k in values if ("key", "team-b") in k[1]]
    assert prom.value(values, "frugalserve_budget_remaining_usd", key="dup#k3aaaaaa", period="day") == 0
    assert prom.value(values, "frugalserve_budget_remaining_usd", key="dup#k4bbbbbb", period="day") == 2.0
    # 22:13:20 UTC: 1 h 46 min 40 s to midnight; the month ends on 1 December
    assert prom.value(values, "frugalserve_budget_period_seconds_left", period="day") == 6400
    assert prom.value(values, "frugalserve_budget_period_seconds_left", period="month") == 1_701_388_800 - 1_700_000_000
