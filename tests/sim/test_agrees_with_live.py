"""The simulator and the live pool (its replicas' owner tasks, the real PoolScaler) on the same trace.

The live side runs frugalserve.lifecycle.pool.ManagedPool on a ManualClock with in-process provisioners
(tests/lifecycle/fakes.py: they start in start_s and wake in wake_s of the manual clock); each request
holds its lease for the service time the performance model gives. Both must make the same starts, wakes,
sleeps and stops, and each request must wait the same time for a replica.
"""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from frugalserve import config as cfg
from frugalserve.clock import ManualClock
from frugalserve.events import RecentEvents
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.pool import ManagedPool
from frugalserve.lifecycle.scaler import PoolScaler, ScaleSignals
from frugalserve.sim.core import Simulation
from frugalserve.sim.perf import PerfModel
from tests.lifecycle.fakes import FakeProvisioner, settle
from tests.sim.test_core import trace

START_S, WAKE_S = 10.0, 2.0
PERF = PerfModel(1000.0, 100.0, 64, START_S, (WAKE_S, WAKE_S), 0.0, 3.6, "on_demand")
SERVICE_S = 2.0  # 1000 prompt tokens at 1000/s, 100 output tokens at 100/s
T0 = 1_700_000_000.0


async def live(config: cfg.Config, times: list[float]) -> tuple[dict[str, int], list[float]]:
    clock = ManualClock(T0)
    events = RecentEvents(size=10_000)
    metrics = LifecycleMetrics(CollectorRegistry())
    pc = config.pools[0]
    provs: list[FakeProvisioner] = []

    def provisioner(name: str) -> FakeProvisioner:
        provs.append(FakeProvisioner(clock, start_s=START_S, wake_s=WAKE_S, can_sleep=pc.backend.sleep_api != "none"))
        return provs[-1]

    pool = ManagedPool(pc, provisioner, clock, events, metrics)
    if PoolScaler.wanted(pool):  # as build_pools does
        pool.scaler = PoolScaler(pool, ScaleSignals(), clock, events, metrics, config.routing)
    await pool.start()
    waits: list[float] = []

    async def request() -> None:
        lease = await pool.acquire()
        waits.append(lease.waited_s)
        await clock.sleep(SERVICE_S)
        lease.release()

    tasks = []
    for t in times:
        await step_to(clock, t)
        tasks.append(asyncio.ensure_future(request()))
        await settle()
    await step_to(clock, times[-1] + 4000)
    await asyncio.gather(*tasks)
    await pool.stop()
    kinds: dict[str, int] = {"start": 0, "wake": 0, "sleep": 0, "stop": 0}
    for e in events.events:
        if getattr(e, "to_state", None) == "starting":
            kinds["wake" if e.from_state == "sleeping" else "start"] += 1
        elif getattr(e, "to_state", None) == "sleeping":
            kinds["sleep"] += 1
        elif getattr(e, "to_state", None) == "stopped" and e.reason != "shutdown":
            kinds["stop"] += 1
    return kinds, waits


async def step_to(clock: ManualClock, wall: float) -> None:
    """Advance the manual clock to `wall` (seconds after T0), 0.5 s at a time so timers fire in order."""
    target = wall
    while clock.monotonic() < target - 1e-9:
        await clock.advance(min(0.5, target - clock.monotonic()))
        await settle()


def simulated(config: cfg.Config, times: list[float]) -> tuple[dict[str, int], list[float]]:
    sim = Simulation(config, {"p": PERF}, trace([T0 + t for t in times]))
    sim.run(until=T0 + times[-1] + 4000)  # as long as the live run goes on
    s = sim.pools["p"].stats
    return {"start": s.starts, "wake": s.wakes, "sleep": s.sleeps, "stop": s.stops}, sim.cold_wait


CASES = {
    "stop after idle": ("{idle_sleep_s: null, idle_stop_s: 60}", "sleep_api: none", ""),
    "sleep, wake, stop": ("{idle_sleep_s: 20, idle_stop_s: 300}", "sleep_api: vllm", ""),
    "min_warm": ("{idle_sleep_s: 5, idle_stop_s: 30, min_warm_s: 90}", "sleep_api: vllm", ""),
    # the tuner's thresholds (price $3.60/h, 10 s start, waiting valued at the default) replace 20 s / 300 s
    # after 3 idle periods; live and simulated pools feed it the same periods and decide at the same times
    "idle: auto": (
        "{idle: auto, idle_auto: {min_samples: 3, refresh_s: 10}, idle_sleep_s: 20, idle_stop_s: 300}",
        "sleep_api: vllm",
        "",
    ),
    "autoscaled, three replicas": (
        "{idle_sleep_s: 5, idle_stop_s: 60}",  # the ladder sleeps only the last replica; the scaler drains the rest
        "sleep_api: vllm",
        ", capacity: 2, replicas: {min: 0, max: 3}, autoscale: {stable_window_s: 20, panic_window_s: 4}",
    ),
}
# sparse arrivals with gaps on both sides of every threshold, then a burst of 12 at once for the autoscaler
TIMES = [0.0, 3.0, 50.0, 75.0, 130.0, 400.0, 401.0, 415.0, 900.0] + [1500.0 + 0.1 * i for i in range(12)] + [1700.0]


@pytest.mark.parametrize("case", CASES)
async def test_simulated_and_live_pools_make_the_same_transitions_and_waits(case: str) -> None:
    lifecycle, backend, extra = CASES[case]
    config = cfg.load_text(
        f"pools: [{{name: p, model: m, backend: {{command: 'x {{port}}', {backend}}}, gpu: {{usd_per_hour: 3.6}},"
        f" lifecycle: {lifecycle}{extra}}}]"
    )
    live_kinds, live_waits = await live(config, TIMES)
    sim_kinds, sim_waits = simulated(config, TIMES)
    assert sim_kinds == live_kinds
    assert sorted(sim_waits) == pytest.approx(sorted(live_waits), abs=0.51)  # the live clock moves in 0.5 s steps
