"""ManagedPool and its replica owner on a ManualClock with an in-process fake backend (no processes)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.clock import ManualClock
from frugalserve.errors import ServiceUnavailable
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.devices import Device
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from tests.lifecycle.fakes import FakeProvisioner, settle


def pool_config(name: str = "p", memory_gb: float = 0.0, **lifecycle: object) -> cfg.PoolConfig:
    lc = ", ".join(f"{k}: {v!r}" if not isinstance(v, list) else f"{k}: {v}" for k, v in lifecycle.items())
    lc = lc.replace("None", "null").replace("'", '"')
    text = (
        "devices: [{name: gpu0, memory_gb: 24}]\n"
        f"pools: [{{name: {name}, model: m-{name}, backend: {{command: 'x {{port}}'}}, "
        f"gpu: {{device: gpu0, memory_gb: {memory_gb}}}, lifecycle: {{{lc}}}}}]"
    )
    return cfg.load_text(text).pools[0]


class World:
    def __init__(self, start_wall: float = 1_700_000_000.0) -> None:
        self.clock = ManualClock(start_wall)
        self.events = RecentEvents()
        self.metrics = LifecycleMetrics(CollectorRegistry())
        self.pools: list[ManagedPool] = []

    async def pool(
        self, prov: FakeProvisioner | None = None, device: Device | None = None, **kw: object
    ) -> ManagedPool:
        pc = pool_config(**kw)  # type: ignore[arg-type]
        prov = prov or FakeProvisioner(self.clock)
        pool = ManagedPool(pc, lambda _name: prov, self.clock, self.events, self.metrics, device)
        await pool.start()
        self.pools.append(pool)
        return pool

    async def advance(self, seconds: float, step: float = 0.25) -> None:
        await settle()  # let tasks just created reach their first clock.sleep
        while seconds > 1e-9:
            await self.clock.advance(min(step, seconds))
            seconds -= step
            await settle()

    def transitions(self, pool: str | None = None) -> list[tuple[str, str, str]]:
        return [(e.from_state, e.to_state, e.reason) for e in self.events.events if pool in (None, e.pool)]


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    for p in w.pools:
        await p.stop()


async def test_burst_while_cold_starts_backend_once(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=5)
    pool = await world.pool(prov)
    tasks = [asyncio.ensure_future(pool.acquire()) for _ in range(50)]
    await settle()
    assert pool.waiting == 50 and pool.replica.state == "starting"
    await world.advance(5)
    leases = [await t for t in tasks]
    assert prov.calls == ["start"]
    assert all(abs(lease.waited_s - 5) < 0.3 for lease in leases)
    assert pool.replica.in_flight == 50
    for lease in leases:
        lease.release()
    assert pool.replica.in_flight == 0
    assert world.transitions() == [("stopped", "starting", "request"), ("starting", "ready", "request")]


async def test_warm_pool_leases_without_waiting(world: World) -> None:
    pool = await world.pool()
    first = asyncio.ensure_future(pool.acquire())
    await world.advance(5)
    (await first).release()
    lease = await pool.acquire()
    assert lease.waited_s == 0.0
    lease.release()


async def test_idle_ladder_sleeps_then_stops_then_wakes_fast(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=5, wake_s=0.5)
    pool = await world.pool(prov, idle_sleep_s=10, idle_stop_s=30, sleep_level=2)
    t = asyncio.ensure_future(pool.acquire())
    await world.advance(5)
    (await t).release()
    await world.advance(9.5)
    assert pool.replica.state == "ready"
    await world.advance(1)
    assert pool.replica.state == "sleeping" and prov.calls == ["start", "sleep2"]
    t = asyncio.ensure_future(pool.acquire())
    await world.advance(0.5)
    lease = await t
    assert 0 < lease.waited_s <= 0.75 and prov.calls[-1] == "wake"
    lease.release()
    await world.advance(31)
    assert pool.replica.state == "stopped"
    reasons = [r for _, to, r in world.transitions() if to in ("sleeping", "stopped")]
    assert reasons == ["idle_sleep", "idle_sleep", "idle_stop"]


async def test_pool_describes_the_last_start_and_the_last_wake_and_when_each_was_ready(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=5, wake_s=0.5)
    pool = await world.pool(prov, idle_sleep_s=None, idle_stop_s=None)
    [replica] = pool.describe()["replicas"]
    assert (replica["last_start"], replica["last_wake"], replica["last_cold_start_s"]) == (None, None, None)
    t = asyncio.ensure_future(pool.acquire())
    await world.advance(5)  # started at 0, ready at 5
    (await t).release()
    await world.advance(10)
    assert await pool.sleep("admin") == "sleeping"  # at 15
    await world.advance(20)
    waking = asyncio.ensure_future(pool.wake("admin", wait=True))  # at 35: ready at 35.5
    await world.advance(0.5)
    await waking
    [replica] = pool.describe()["replicas"]
    assert replica["last_start"] == {"s": 5.0, "at": 1_700_000_005.0}
    assert replica["last_wake"] == {"s": 0.5, "at": 1_700_000_035.5}
    assert replica["last_cold_start_s"] == 0.5  # the last of either kind, as before


async def test_long_request_survives_idle_deadline_and_idle_counts_from_its_end(world: World) -> None:
    pool = await world.pool(idle_sleep_s=10, idle_stop_s=None)
    t = asyncio.ensure_future(pool.acquire())
    await world.advance(5)
    lease = await t
    await world.advance(30)  # a long stream, far past idle_sleep_s
    assert pool.replica.state == "ready"
    lease.release()
    await world.advance(9.5)
    assert pool.replica.state == "ready"
    await world.advance(1)
    assert pool.replica.state == "sleeping"


async def test_admin_sleep_drains_first_and_a_new_request_cancels_the_drain(world: World) -> None:
    pool = await world.pool(idle_sleep_s=None, idle_stop_s=None)
    t = asyncio.ensure_future(pool.acquire())
    await world.advance(5)
    lease = await t
    sleeping = asyncio.ensure_future(pool.sleep("admin"))
    await settle()
    assert not sleeping.done() and pool.describe()["replicas"][0]["draining"] == "sleep"
    second = await pool.acquire()  # arrives during the drain
    assert (await sleeping).startswith("cancelled")
    lease.release()
    second.release()
    await settle()
    assert pool.replica.state == "ready"
    # without interruption the drain ends in sleep once the last request ends
    lease = await pool.acquire()
    sleeping = asyncio.ensure_future(pool.sleep("admin"))
    await settle()
    lease.release()
    await settle()
    assert await sleeping == "sleeping"


async def test_failed_start_fails_every_waiter_at_once_and_next_request_restarts(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=2)
    prov.fail_starts = 1
    pool = await world.pool(prov, restart_backoff_s=4)
    tasks = [asyncio.ensure_future(pool.acquire()) for _ in range(5)]
    await world.advance(2)
    for t in tasks:
        with pytest.raises(ServiceUnavailable):
            await t
    assert prov.calls == ["start"] and pool.replica.state == "failed"
    t = asyncio.ensure_future(pool.acquire())  # first restart after one failure: no backoff
    await world.advance(2)
    (await t).release()
    assert prov.calls == ["start", "start"]


async def test_crashed_backend_is_detected_and_restarts_back_off(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=1)
    pool = await world.pool(prov, restart_backoff_s=4, restart_backoff_max_s=60)
    for expected_wait in (1, 1, 5):  # start; restart at once after 1st crash; 4 s backoff after the 2nd
        t = asyncio.ensure_future(pool.acquire())
        await world.advance(expected_wait)
        lease = await t
        assert abs(lease.waited_s - expected_wait) < 0.3
        lease.release()
        prov.crash()
        await settle()
        assert pool.replica.state == "failed"
    assert [r for _, to, r in world.transitions() if to == "failed"] == ["exited"] * 3


async def test_queue_full_and_long_wait_get_503_with_retry_after(world: World) -> None:
    pool = await world.pool(FakeProvisioner(world.clock, start_s=100), max_queue=2, max_wait_s=10)
    held = [asyncio.ensure_future(pool.acquire()) for _ in range(2)]
    await settle()
    with pytest.raises(ServiceUnavailable) as info:
        await pool.acquire()
    assert int(info.value.headers["Retry-After"]) >= 1
    await world.advance(10.5)
    for t in held:
        with pytest.raises(ServiceUnavailable) as info:
            await t
        assert "within 10s" in info.value.message


async def test_cron_prewarm_wakes_the_pool_ahead_of_the_peak() -> None:
    # Monday 2026-05-11 08:54:00 in Paris; the schedule fires at 08:55 on weekdays
    start = datetime(2026, 5, 11, 8, 54, tzinfo=ZoneInfo("Europe/Paris")).timestamp()
    w = World(start_wall=start)
    prov = FakeProvisioner(w.clock, start_s=2)
    pool = await w.pool(prov, prewarm=["55 8 * * 1-5"], timezone="Europe/Paris", idle_sleep_s=None)
    try:
        await w.advance(59, step=1)
        assert prov.calls == []
        await w.advance(4, step=1)
        assert prov.calls == ["start"] and pool.replica.state == "ready"
        assert ("stopped", "starting", "prewarm") in w.transitions()
    finally:
        await pool.stop()


async def test_waking_a_pool_that_does_not_fit_first_sleeps_the_least_recently_used(world: World) -> None:
    device = Device("gpu0", 24, world.clock)
    provs = {n: FakeProvisioner(world.clock, start_s=1) for n in "abc"}
    pools = {n: await world.pool(provs[n], device, name=n, memory_gb=10, idle_sleep_s=None) for n in "abc"}
    for n in "ab":
        t = asyncio.ensure_future(pools[n].acquire())
        await world.advance(1)
        (await t).release()
        await world.advance(1)
    busy = await pools["b"].acquire()  # b is busy; a is idle and least recently used
    t = asyncio.ensure_future(pools["c"].acquire())
    await world.advance(1)
    (await t).release()
    assert pools["a"].replica.state == "sleeping" and ("ready", "stopping", "evicted") in world.transitions("a")
    assert pools["b"].replica.state == "ready"
    assert device.used_gb() == 20
    busy.release()


async def test_no_room_on_device_waits_bounded_then_503(world: World) -> None:
    device = Device("gpu0", 24, world.clock)
    a = await world.pool(FakeProvisioner(world.clock, start_s=1), device, name="a", memory_gb=20, idle_sleep_s=None)
    b = await world.pool(FakeProvisioner(world.clock, start_s=1), device, name="b", memory_gb=20, max_wait_s=3)
    t = asyncio.ensure_future(a.acquire())
    await world.advance(1)
    busy = await t
    t = asyncio.ensure_future(b.acquire())
    await world.advance(3.5)
    with pytest.raises(ServiceUnavailable):
        await t
    busy.release()
