"""pool.view(now): what the router reads from live pools (a static URL pool, and a managed pool on a
ManualClock with the in-process fake backend of the lifecycle tests)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.clock import ManualClock
from frugalserve.errors import ServiceUnavailable
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from frugalserve.pools import StaticPool
from frugalserve.routing.policy import decide
from frugalserve.routing.snapshot import idle_snapshot
from tests.lifecycle.fakes import FakeProvisioner, advance
from tests.routing.helpers import LARGE, SMALL, feats


async def test_static_pool_is_external_and_counts_its_requests_in_flight() -> None:
    c = cfg.load_text(
        "pools: [{name: s, model: m, tier: S, capacity: 8, modalities: [text, image],"
        " backend: {url: 'http://127.0.0.1:9'}, gpu: {count: 2, usd_per_hour: 1.5, billing: reserved},"
        " limits: {max_context_tokens: 8192, max_new_tokens: 1024, max_tokens_policy: reject,"
        " image: {max_count: 4}, max_visual_tokens: 4096}}]"
    )
    pool = StaticPool(c.pools[0])
    leases = [await pool.acquire() for _ in range(3)]
    v = pool.view(100.0)
    assert (v.name, v.tier, v.state, v.in_flight, v.held, v.eta_s) == ("s", "S", "external", 3, 0, 0.0)
    assert (v.usd_per_hour, v.reserved, v.capacity, v.replicas, v.ready_replicas) == (3.0, True, 8, 1, 1)
    assert (v.context_tokens, v.max_new_tokens, v.clamps, v.max_images, v.max_visual_tokens) == (
        8192,
        1024,
        False,
        4,
        4096,
    )
    assert v.modalities == {"text", "image"} and v.warm
    for lease in leases:
        lease.release()
    assert pool.view(101.0).in_flight == 0


class World:
    def __init__(self) -> None:
        self.clock = ManualClock(1_700_000_000.0)
        self.metrics = LifecycleMetrics(CollectorRegistry())
        self.pools: list[ManagedPool] = []

    async def pool(self, prov: FakeProvisioner, lifecycle: str = "{}") -> ManagedPool:
        text = (
            "pools: [{name: p, model: m, tier: M, backend: {command: 'x {port}', startup_timeout_s: 20},"
            f" gpu: {{usd_per_hour: 2.0}}, lifecycle: {lifecycle}}}]"
        )
        pool = ManagedPool(cfg.load_text(text).pools[0], lambda _name: prov, self.clock, RecentEvents(), self.metrics)
        await pool.start()
        self.pools.append(pool)
        return pool

    async def advance(self, seconds: float, step: float = 0.25) -> None:
        await advance(self.clock, seconds, step)


@pytest.fixture
async def world() -> AsyncIterator[World]:
    w = World()
    yield w
    for p in w.pools:
        await p.stop()


async def test_managed_pool_view_follows_start_ready_sleep_and_wake(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=5, wake_s=2)
    pool = await world.pool(prov, "{idle_sleep_s: 10, idle_stop_s: 100, min_warm_s: 30}")
    now = world.clock.monotonic
    v = pool.view(now())
    # never started: the default start (min(startup_timeout_s, 30) = 20) and level-1 wake (1 s)
    assert (v.state, v.eta_s, v.start_s, v.wake_s, v.ready_replicas) == ("stopped", 20.0, 20.0, 1.0, 0)
    assert (v.min_warm_s, v.linger_s, v.usd_per_hour) == (30.0, 10.0, 2.0)

    first = asyncio.ensure_future(pool.acquire())
    await world.advance(2)
    v = pool.view(now())
    assert (v.state, v.held) == ("starting", 1) and v.eta_s == pytest.approx(18.0, abs=0.3)  # 20 - 2 elapsed
    await world.advance(3)
    lease = await first
    v = pool.view(now())
    assert (v.state, v.in_flight, v.held, v.eta_s, v.ready_replicas) == ("ready", 1, 0, 0.0, 1)
    assert v.start_s == pytest.approx(5.0, abs=0.3)  # measured now
    lease.release()

    await world.advance(31)  # min_warm_s 30 holds the idle sleep back until then
    v = pool.view(now())
    assert v.state == "sleeping" and v.eta_s == 1.0

    second = asyncio.ensure_future(pool.acquire())
    await world.advance(0.5)
    v = pool.view(now())
    assert v.state == "waking" and v.eta_s == pytest.approx(0.5, abs=0.3)  # default wake 1 s, 0.5 s passed
    await world.advance(2)
    (await second).release()
    assert pool.view(now()).wake_s == pytest.approx(2.0, abs=0.3)


async def test_failed_pool_view_adds_the_restart_backoff(world: World) -> None:
    prov = FakeProvisioner(world.clock, start_s=5)
    prov.fail_starts = 2
    pool = await world.pool(prov, "{restart_backoff_s: 4}")
    for _ in range(2):
        t = asyncio.ensure_future(pool.acquire())
        await world.advance(5)
        with pytest.raises(ServiceUnavailable, match="failed to start"):
            await t
    v = pool.view(world.clock.monotonic())
    # two failures in a row: the next start waits 4 s (restart_backoff_s), then a 20 s default start
    assert v.state == "failed" and v.eta_s == pytest.approx(24.0, abs=0.3)


def test_idle_snapshot_routes_on_score_and_fit_alone() -> None:
    c = cfg.load_file(Path(__file__).resolve().parents[2] / "config.example.yaml")
    snapshot = idle_snapshot(c.pools)
    assert {v.state for v in snapshot.pools} == {"ready"} and {v.in_flight for v in snapshot.pools} == {0}
    assert decide(SMALL, snapshot, c.routing).pool == "small"
    assert decide(LARGE, snapshot, c.routing).pool == "large"
    assert decide(feats(code_blocks=3, tools=True), snapshot, c.routing).pool == "vision"
