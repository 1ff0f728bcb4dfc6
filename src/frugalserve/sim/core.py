"""The simulator: a trace replayed through the live gateway's decision code on a virtual clock.

What decides is imported, never copied (tests/sim/test_live_code.py checks it):

- the idle ladder: :func:`frugalserve.lifecycle.policy.idle_decision` (and, with ``lifecycle.idle: auto``,
  the thresholds of :mod:`frugalserve.lifecycle.idle_auto`);
- the autoscaler: the live :class:`frugalserve.lifecycle.scaler.PoolScaler` itself, whose ``tick()`` reads the
  simulated pool through the same attributes it reads a :class:`~frugalserve.lifecycle.pool.ManagedPool`
  through, and decides with :func:`frugalserve.lifecycle.autoscale.desired_replicas` and, with predictive
  prewarm on, :func:`frugalserve.lifecycle.prewarm.learn_profile` / ``prewarm_decision``;
- cron prewarm: :func:`frugalserve.lifecycle.cron.next_prewarm`;
- which replica takes a request: :func:`frugalserve.routing.replicas.choose_replica`; which pool serves
  ``model: auto``: :func:`frugalserve.routing.policy.decide` over the same :class:`PoolsSnapshot` the gateway
  builds (:func:`frugalserve.routing.snapshot.pool_view`).

What the simulator adds is the world those decisions act on, in virtual time: a replica takes ``start_s``
to start and ``wake_s`` to wake (:mod:`.perf`), runs ``concurrency`` requests at once (first come, first
served: a request's time to first token is its wait plus its prefill), and bills by the accounting's rules
(:mod:`frugalserve.accounting.costs`: on demand while starting, ready or sleeping; reserved always). Its
effects mirror the live pool's (hold while cold, bring up one replica at a time, the sleeping one first;
drain before stopping; the idle ladder only on a scaled pool's last replica).

Time is the trace's own (epoch seconds, used as both the monotonic and the wall clock), and it only
moves forward: each arrival, replica coming up, autoscaler tick and cron prewarm is handled in time order,
and a replica's idle ladder is caught up lazily, each time something looks at it, by asking
``idle_decision`` when its next step is due. Nothing sleeps.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from heapq import heappop, heappush
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from frugalserve.accounting.costs import ON_DEMAND_BILLED
from frugalserve.config import Config, PoolConfig
from frugalserve.errors import APIError
from frugalserve.events import Event, ScaleEvent
from frugalserve.lifecycle.autoscale import ScaleDecision
from frugalserve.lifecycle.cron import next_prewarm
from frugalserve.lifecycle.idle_auto import IdleCosts, IdleTuner
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.policy import (
    COLD_ORDER,
    ReplicaView,
    bring_up_rank,
    idle_decision,
    idle_ladder_applies,
    removal_rank,
)
from frugalserve.lifecycle.prewarm import learn_profile, learning_window
from frugalserve.lifecycle.scaler import PoolScaler, ScaleSignals
from frugalserve.routing.features import Features
from frugalserve.routing.policy import decide
from frugalserve.routing.replicas import HashRing, ReplicaLoad, choose_replica
from frugalserve.routing.snapshot import PoolsSnapshot, PoolState, PoolView, pool_view
from frugalserve.sim.perf import PerfModel
from frugalserve.sim.trace import PRIORITIES, Trace

_UNKNOWN = -1.0  # a replica's next idle check must be asked for (something changed)


class SimClock:
    """The live :class:`~frugalserve.clock.Clock` interface over the simulator's time; it never sleeps."""

    __slots__ = ("now",)

    def __init__(self, now: float) -> None:
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        raise RuntimeError("the simulator's clock never sleeps: time moves from one event to the next")


class EventLog:
    """The live ``EventSink``: what the autoscaler reports, counted by action."""

    def __init__(self) -> None:
        self.scale: dict[str, dict[str, int]] = {}  # pool -> action -> count

    def submit(self, event: Event) -> None:
        if isinstance(event, ScaleEvent):
            counts = self.scale.setdefault(event.pool, {})
            counts[event.action] = counts.get(event.action, 0) + 1


# -- one replica ------------------------------------------------------------------------------------------


class SimReplica:
    """A replica in virtual time. ``name``, ``state`` and ``in_flight`` are what the live scaler reads."""

    __slots__ = (
        "billed_s",
        "busy_s",
        "busy_until",
        "changed_at",
        "cold_s",
        "finishes",
        "gen",
        "in_flight",
        "last_ready",
        "last_used",
        "name",
        "next_check",
        "prewarmed",
        "ready_at",
        "since",
        "sleep_done",
        "slots",
        "started_at",
        "state",
    )

    def __init__(self, name: str, concurrency: int, now: float) -> None:
        self.name = name
        self.state = "stopped"
        self.since = now  # when the current state began
        self.changed_at = now  # last change the idle ladder must re-read (state, last request ended)
        self.in_flight = 0
        self.finishes: list[float] = []  # end times of requests in flight (a heap)
        self.slots = [now] * concurrency  # when each of the backend's concurrent slots is free (a heap)
        self.last_used = now
        self.last_ready = now
        self.next_check: float | None = _UNKNOWN
        self.gen = 0  # bumps on every bring-up, so a stale "ready" event is ignored
        self.ready_at = 0.0
        self.sleep_done = 0.0  # a sleep in progress takes perf.sleep_s; a wake waits for it
        self.started_at = now  # the last start, for a minimum charge
        self.prewarmed: str | None = None
        self.busy_until = now
        self.busy_s = 0.0
        self.billed_s = 0.0
        self.cold_s = 0.0


@dataclass
class PoolStats:
    """What happened to one pool in one run (seconds are replica-seconds)."""

    pool: str
    requests: int = 0
    served: int = 0
    refused: dict[str, int] = field(default_factory=dict)  # reason -> count
    starts: int = 0
    wakes: int = 0
    sleeps: int = 0
    stops: int = 0
    billed_s: float = 0.0
    busy_s: float = 0.0
    cold_start_s: float = 0.0
    usd: float = 0.0
    always_on_usd: float = 0.0
    ideal_usd: float = 0.0
    gpus: int = 1
    peak_replicas: int = 0
    prewarms: dict[str, int] = field(default_factory=dict)  # "cron_used", "predictive_expired", ...
    threshold_changes: int = 0  # idle: auto
    last_thresholds: tuple[float | None, float | None, str] | None = None  # idle: auto: sleep_s, stop_s, why
    scale_events: dict[str, int] = field(default_factory=dict)

    @property
    def cold_starts(self) -> int:
        return self.starts + self.wakes


# -- one pool ------------------------------------------------------------------------------------------------


class SimPool:
    """A managed (or static) pool in virtual time, readable by the live PoolScaler like a ManagedPool."""

    def __init__(self, sim: Simulation, config: PoolConfig, perf: PerfModel, managed: bool) -> None:
        self.sim = sim
        self.name = config.name
        self.config = config
        self.perf = perf
        self.managed = managed
        lc = config.lifecycle
        self.lc = lc
        self.can_sleep = config.backend.sleep_api != "none"
        self.sleep_level = lc.sleep_level
        now = sim.clock.now
        count = config.replicas.max if managed else 1
        self.replicas = [SimReplica(f"{self.name}-{i}", perf.concurrency, now) for i in range(count)]
        self._ring = HashRing([r.name for r in self.replicas]) if count > 1 else None
        self.held: deque[tuple[int, float]] = deque()  # (row, arrival) of requests waiting for a replica
        self.draining: set[str] = set()
        self.pending: set[str] = set()
        self.last_expired: dict[str, float] = {}  # read by the live scaler (predictive prewarm)
        self.stats = PoolStats(self.name, gpus=config.gpu.count)
        self.arrivals: dict[int, int] = {}  # bucket index -> requests (predictive prewarm learns from it)
        self.work_s = 0.0  # sum of request run times, for the mean duration predictive prewarm uses
        self.scaler: PoolScaler | None = None
        # lifecycle.idle: auto: the live tuner, fed the pool's idle periods as ManagedPool feeds it
        self.idle_tuner = IdleTuner(lc.idle_auto, (lc.idle_sleep_s, lc.idle_stop_s)) if lc.idle == "auto" else None
        self.idle_since: float | None = None
        self.idle_cfg = lc
        tier = config.tier
        self.objective_s = sim.config.routing.objective(tier).slo_ms / 1000.0 if tier is not None else None
        self.served = 0  # into stats.served at the end (an attribute of the pool is quicker to bump)
        self._per_prompt_token = 1.0 / perf.prefill_tps
        self._per_output_token = 1.0 / perf.decode_tps
        self._ready: list[SimReplica] = []
        self.tick_at: float | None = None  # the next autoscaler tick scheduled (None: none pending)
        self.last_tick: float | None = None
        if not managed:
            for r in self.replicas:
                self._set_state(r, "ready", now)
        else:
            for r in self.replicas[: config.replicas.min]:  # a floor is up when the trace begins
                self._set_state(r, "ready", now)
                r.last_ready = r.last_used = now

    # -- what the live scaler reads and calls -------------------------------------------------------------

    @property
    def waiting(self) -> int:
        return len(self.held)

    def counted(self) -> list[SimReplica]:
        return [
            r
            for r in self.replicas
            if r.name not in self.draining and (r.state in ("ready", "starting") or r.name in self.pending)
        ]

    def add(
        self, reason: str, prewarm: str | None = None, on_refused: Callable[[str, str, bool], None] | None = None
    ) -> SimReplica | None:
        r = self._cold_replica()
        if r is None:
            return None
        if prewarm is not None:
            r.prewarmed = prewarm
        self._bring_up(r, self.sim.clock.now)
        return r

    def remove(self, reason: str) -> SimReplica | None:
        candidates = self.counted()
        if not candidates:
            return None
        index = {r.name: i for i, r in enumerate(self.replicas)}
        r = min(candidates, key=lambda x: removal_rank(x.state == "ready", x.in_flight, index[x.name]))
        now = self.sim.clock.now
        self.draining.add(r.name)
        self._refresh_ready()
        if r.state == "starting":  # a start that is no longer wanted ends at once
            self.pending.discard(r.name)
            self._stop(r, now)
        elif r.in_flight == 0:
            self._stop(r, now)
        return r

    def view(self, now: float) -> PoolView:
        """As ManagedPool.view: the best replica's state and what a request arriving now would wait."""
        perf = self.perf
        best: PoolState = "stopped"
        eta = math.inf
        ready = up = in_flight = 0
        state: PoolState
        for r in self.replicas:
            in_flight += r.in_flight
            if r.name in self.draining:
                continue
            if r.state == "ready":
                ready += 1
                state, wait = "ready", 0.0
            elif r.state == "starting":
                state, wait = "starting", max(0.0, r.ready_at - now)
            elif r.state == "sleeping":
                state, wait = "sleeping", perf.wake_for(self.sleep_level)
            else:
                state, wait = "stopped", perf.start_s
            up += r.state in ("ready", "starting", "sleeping")
            if wait < eta:
                best, eta = state, wait
        return pool_view(
            self.config,
            state=best,
            replicas=max(up, 1),
            ready_replicas=ready,
            in_flight=in_flight,
            held=len(self.held),
            eta_s=eta,
            start_s=perf.start_s,
            wake_s=perf.wake_for(self.sleep_level),
        )

    # -- requests ---------------------------------------------------------------------------------------------

    def arrive(self, row: int, t: float) -> None:
        self.stats.requests += 1
        self.advance(t)
        if self.idle_tuner is not None and self.idle_since is not None:
            self.idle_tuner.record_gap(t - self.idle_since)  # as ManagedPool._arrived
            self.idle_since = None
        ready = self._ready
        if ready:
            self._lease(ready[0] if len(ready) == 1 else self._choose(ready), row, t, t)
            return
        self._expire_held(t)
        if len(self.held) >= self.lc.max_queue:
            self._refuse("queue_full")
            return
        self.held.append((row, t))
        if not any(self._coming(x) for x in self.replicas):
            target = self._cold_replica()
            if target is not None:
                self._bring_up(target, t)

    def _refresh_ready(self) -> None:
        """The replicas a request may be leased to now: ready and not being removed (kept, not recomputed
        per request: it changes only with a state or a drain)."""
        self._ready = [r for r in self.replicas if r.state == "ready" and r.name not in self.draining]

    def _pick(self) -> SimReplica | None:
        ready = self._ready
        if not ready:
            return None
        return ready[0] if len(ready) == 1 else self._choose(ready)

    def _choose(self, ready: list[SimReplica]) -> SimReplica:
        name = choose_replica([ReplicaLoad(r.name, r.in_flight) for r in ready], None, self._ring)
        return next(r for r in ready if r.name == name)

    def _lease(self, r: SimReplica, row: int, arrival: float, dispatch: float) -> None:
        sim = self.sim
        prompt = sim.prompt[row]
        out = sim.output[row]
        slots = r.slots
        slot = heappop(slots)
        begin = dispatch if dispatch > slot else slot
        prefill = prompt * self._per_prompt_token
        end = begin + prefill + out * self._per_output_token
        heappush(slots, end)
        heappush(r.finishes, end)
        r.in_flight += 1
        busy_until = r.busy_until
        if dispatch >= busy_until:
            r.busy_s += end - dispatch
            r.busy_until = end
        elif end > busy_until:
            r.busy_s += end - busy_until
            r.busy_until = end
        if r.prewarmed is not None:
            self._prewarm_outcome(r, "used", dispatch)
        self.served += 1
        self.work_s += end - dispatch
        sim.ttft.append(begin + prefill - arrival)
        sim.latency.append(end - arrival)
        sim.cold_wait.append(dispatch - arrival)
        sim.tokens += prompt + out

    def _refuse(self, reason: str, n: int = 1) -> None:
        self.stats.refused[reason] = self.stats.refused.get(reason, 0) + n

    def _expire_held(self, t: float) -> None:
        limit = self.lc.max_wait_s
        while self.held and self.held[0][1] + limit < t:
            self.held.popleft()
            self._refuse("timeout")

    # -- time passing -------------------------------------------------------------------------------------------

    def advance(self, t: float) -> None:
        """Bring every replica's in-flight requests and idle ladder up to time t."""
        if not self.managed:
            for r in self.replicas:
                fin = r.finishes
                while fin and fin[0] <= t:
                    r.last_used = heapq.heappop(fin)
                    r.in_flight -= 1
            return
        tuner = self.idle_tuner
        if tuner is not None:
            self._idle_auto(t)
        for r in self.replicas:
            fin = r.finishes
            if fin and fin[0] <= t:
                while fin and fin[0] <= t:
                    r.last_used = heapq.heappop(fin)
                    r.in_flight -= 1
                if r.in_flight == 0:
                    r.changed_at = r.last_used
                    r.next_check = _UNKNOWN
                    if r.name in self.draining:
                        self._stop(r, r.last_used)
                        continue
            if r.in_flight == 0 and (r.state == "ready" or r.state == "sleeping"):
                if r.next_check is None or (r.next_check != _UNKNOWN and r.next_check > t):
                    continue
                self._ladder(r, t)

    def _idle_auto(self, t: float) -> None:
        """As ManagedPool.maybe_idle and its refresh: the pool's idle period begins when its last request
        ends with nothing held; while idle with new samples, the thresholds are decided again once
        ``refresh_s`` allows (and every replica's ladder re-reads them)."""
        tuner = self.idle_tuner
        assert tuner is not None
        if self.idle_since is None and not self.held and self.served:
            last: float | None = 0.0
            for r in self.replicas:
                end = max(r.finishes) if r.finishes else r.last_used
                if end > t:
                    last = None
                    break
                last = max(last, end)  # type: ignore[type-var]
            self.idle_since = last
        if self.idle_since is not None and tuner.pending:
            due = tuner.due_at()
            at = self.idle_since if due is None else max(due, self.idle_since)
            if at <= t:
                self.thresholds(at)

    def thresholds(self, now: float) -> Any:
        """The lifecycle config in force at ``now``: as configured, or with ``idle: auto`` the live tuner's."""
        tuner = self.idle_tuner
        if tuner is None:
            return self.lc
        perf = self.perf
        costs = IdleCosts(
            usd_per_s=perf.usd_per_hour / 3600 if perf.billing == "on_demand" else 0.0,
            start_s=perf.start_s,
            wake_s=perf.wake_for(self.sleep_level),
            can_sleep=self.can_sleep,
            min_warm_s=self.lc.min_warm_s,
            usd_per_wait_s=self.lc.predictive_prewarm.usd_per_waiting_s,
            objective_s=self.objective_s,
            shares_device=False,  # the planner gives each pool its own GPUs
        )
        th = tuner.decide(now, costs)
        if (th.sleep_s, th.stop_s) != (self.idle_cfg.idle_sleep_s, self.idle_cfg.idle_stop_s):
            self.idle_cfg = dataclasses.replace(self.lc, idle_sleep_s=th.sleep_s, idle_stop_s=th.stop_s)
            self.stats.threshold_changes += 1
            for r in self.replicas:  # re-armed, as Replica.rearm: the ladder asks again now
                r.next_check = _UNKNOWN
                r.changed_at = max(r.changed_at, now)
        self.stats.last_thresholds = (th.sleep_s, th.stop_s, th.reason)
        return self.idle_cfg

    def _ladder_applies(self) -> bool:
        return idle_ladder_applies(self.config.replicas.min, self.scaler is not None, len(self.counted()))

    def _ladder(self, r: SimReplica, t: float) -> None:
        if not self._ladder_applies():
            r.next_check = _UNKNOWN
            return
        lc = self.idle_cfg if self.idle_tuner is not None else self.lc
        while r.in_flight == 0 and (r.state == "ready" or r.state == "sleeping"):
            check = r.next_check
            if check is None:
                return
            at = r.changed_at if check == _UNKNOWN else check
            if at > t:
                return
            view = ReplicaView(self.name, r.name, r.state, 0, r.last_used, r.last_ready, 0.0, self.can_sleep)  # type: ignore[arg-type]
            d = idle_decision(view, at, lc)
            if d.action == "sleep":
                self._sleep(r, at)
            elif d.action == "stop":
                self._stop(r, at)
                return
            else:
                r.next_check = d.check_at

    # -- state changes (the owner's effects) ----------------------------------------------------------------------

    def _set_state(self, r: SimReplica, to: str, t: float) -> None:
        prev = r.state
        if self.perf.billing != "reserved" and prev in ON_DEMAND_BILLED:
            r.billed_s += t - r.since
        if prev == "starting":
            r.cold_s += t - r.since
        r.state = to
        r.since = t
        r.changed_at = t
        r.next_check = _UNKNOWN
        self._refresh_ready()
        self.sim.on_change(self)

    def _cold_replica(self) -> SimReplica | None:
        """As ManagedPool._cold_replica (every slot exists from the start here: a new slot is a stopped one)."""
        cold = [
            (bring_up_rank(r.state, i), r)
            for i, r in enumerate(self.replicas)
            if r.state in COLD_ORDER and r.name not in self.draining and r.name not in self.pending
        ]
        return min(cold, key=lambda c: c[0])[1] if cold else None

    def _coming(self, r: SimReplica) -> bool:
        return (r.state == "starting" or r.name in self.pending) and r.name not in self.draining

    def _bring_up(self, r: SimReplica, t: float) -> None:
        perf = self.perf
        if r.state == "sleeping":
            ready_at = max(t, r.sleep_done) + perf.wake_for(self.sleep_level)
            self.stats.wakes += 1
        else:
            ready_at = t + perf.start_s
            self.stats.starts += 1
            r.started_at = t
        self.pending.add(r.name)
        self._set_state(r, "starting", t)
        r.gen += 1
        r.ready_at = ready_at
        self.sim.schedule(ready_at, _READY, self, (r, r.gen))
        live = sum(x.state in ("ready", "starting") for x in self.replicas)
        if live > self.stats.peak_replicas:
            self.stats.peak_replicas = live

    def ready(self, r: SimReplica, gen: int, t: float) -> None:
        if gen != r.gen or r.state != "starting":
            return
        self.advance(t)
        self.pending.discard(r.name)
        self._set_state(r, "ready", t)
        r.last_ready = t
        if r.last_used < t:
            r.last_used = t
        self._expire_held(t)
        while self.held:
            target = self._pick()
            if target is None:
                break
            row, arrival = self.held.popleft()
            self._lease(target, row, arrival, t)

    def _sleep(self, r: SimReplica, t: float) -> None:
        self.stats.sleeps += 1
        self._set_state(r, "sleeping", t)
        r.sleep_done = t + self.perf.sleep_s
        if r.prewarmed is not None:
            self._prewarm_outcome(r, "expired", t)

    def _stop(self, r: SimReplica, t: float) -> None:
        if r.state == "stopped":
            return
        self.stats.stops += 1
        if self.perf.billing != "reserved" and r.state in ON_DEMAND_BILLED:
            short = self.perf.min_billed_s - (t - r.started_at)
            if short > 0:
                r.billed_s += short
        self.draining.discard(r.name)
        self.pending.discard(r.name)
        r.gen += 1  # a start that was still under way will not come up
        self._set_state(r, "stopped", t)
        if r.prewarmed is not None:
            self._prewarm_outcome(r, "expired", t)

    def _prewarm_outcome(self, r: SimReplica, outcome: str, t: float) -> None:
        kind, r.prewarmed = r.prewarmed, None
        key = f"{kind}_{outcome}"
        self.stats.prewarms[key] = self.stats.prewarms.get(key, 0) + 1
        if outcome == "expired" and kind is not None:
            self.last_expired[kind] = t

    def finish(self, end: float) -> None:
        """Close the books at the end of the window."""
        self.advance(end)
        for r in self.replicas:
            if self.perf.billing == "reserved":
                r.billed_s = end - self.sim.start
            elif r.state in ON_DEMAND_BILLED:
                r.billed_s += end - r.since
                r.since = end
            if r.state == "starting":
                r.cold_s += end - r.since
        if self.held:
            self._refuse("timeout", len(self.held))
            self.held.clear()


_READY, _TICK, _CRON = 0, 1, 2


class Simulation:
    """One policy (a config and the pools' performance models) over one trace."""

    def __init__(
        self,
        config: Config,
        perf: dict[str, PerfModel],
        trace: Trace,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.config = config
        self.trace = trace
        self.start = trace.start
        self.clock = SimClock(self.start)
        self.progress = progress
        self.registry = CollectorRegistry()
        self.metrics = LifecycleMetrics(self.registry)
        self.events = EventLog()
        self.signals = ScaleSignals()
        self._heap: list[tuple[float, int, int, SimPool, Any]] = []
        self._seq = 0
        self.prompt: list[int] = (trace.prompt_tokens + trace.image_tokens).tolist()
        self.output: list[int] = trace.output_tokens.tolist()
        self.ttft: list[float] = []
        self.latency: list[float] = []
        self.cold_wait: list[float] = []
        self.tokens = 0
        self.unrouted: dict[str, int] = {}
        self.pools: dict[str, SimPool] = {}
        for pc in config.pools:
            managed = pc.backend.command is not None or pc.backend.ray is not None
            pool = SimPool(self, pc, perf[pc.name], managed)
            self.pools[pc.name] = pool
        self._by_model: dict[str, SimPool] = {}
        for pool in self.pools.values():
            for name in (pool.config.model, *pool.config.aliases):
                self._by_model.setdefault(name, pool)
        for pool in self.pools.values():
            if pool.managed and PoolScaler.wanted(pool):  # type: ignore[arg-type]
                pool.scaler = PoolScaler(
                    pool,  # type: ignore[arg-type]
                    self.signals,
                    self.clock,
                    self.events,
                    self.metrics,
                    config.routing,
                )
                self._schedule_tick(pool, self.start)
            if pool.managed and pool.lc.prewarm:
                fire = next_prewarm(pool.lc.prewarm, pool.lc.timezone, self.start)
                if fire is not None:
                    self.schedule(fire, _CRON, pool, None)

    def on_change(self, pool: SimPool) -> None:
        """A replica changed state: an autoscaler that stopped ticking at zero ticks again."""
        if pool.scaler is not None and pool.tick_at is None:
            self._schedule_tick(pool, self.clock.now)

    # -- events --------------------------------------------------------------------------------------------------

    def schedule(self, t: float, kind: int, pool: SimPool, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, kind, pool, payload))

    def _grid(self, pool: SimPool, t: float, up: bool) -> float:
        """The autoscaler's ticks fall on a fixed grid from the trace's start, as a loop that never stopped."""
        interval = pool.config.autoscale.interval_s
        k = (t - self.start) / interval
        return self.start + (math.ceil(k - 1e-9) if up else math.floor(k + 1e-9)) * interval

    def _schedule_tick(self, pool: SimPool, after: float) -> None:
        t = self._grid(pool, after, up=True)
        if pool.last_tick is not None and t <= pool.last_tick:
            t = pool.last_tick + pool.config.autoscale.interval_s
        pool.tick_at = t
        self.schedule(t, _TICK, pool, None)

    def _tick(self, pool: SimPool, t: float) -> None:
        pool.advance(t)
        scaler = pool.scaler
        assert scaler is not None
        pool.tick_at = None
        pool.last_tick = t
        predictive = pool.lc.predictive_prewarm.enabled
        if predictive:
            self._learn(pool, scaler, t)
        decision = _run_sync(scaler.tick())
        # At zero with nothing held (and no forecast) the live loop decides zero at every tick, each time
        # keeping one empty observation: the simulator stops ticking and makes the last of those ticks
        # when something wakes the pool (_resume), so the history is the live one.
        if predictive or pool.held or decision.desired > 0 or pool.counted():
            self._schedule_tick(pool, t)

    def _resume(self, pool: SimPool, t: float) -> None:
        """Before an arrival (or a prewarm) at a resting pool: the tick the live loop made last, then ticks again."""
        scaler = pool.scaler
        if scaler is None or pool.tick_at is not None:
            return
        g = self._grid(pool, t, up=False)
        if pool.last_tick is None or g > pool.last_tick:
            self.clock.now = g
            pool.advance(g)
            pool.last_tick = g
            _run_sync(scaler.tick())
            self.clock.now = t
        self._schedule_tick(pool, t)

    def _learn(self, pool: SimPool, scaler: PoolScaler, t: float) -> None:
        """What PoolScaler._learn reads from the usage records, read from the trace seen so far."""
        cfg = pool.lc.predictive_prewarm
        if scaler._learnt_at is not None and t - scaler._learnt_at < cfg.refresh_s:
            return
        scaler._learnt_at = t
        since, until = learning_window(t, cfg)
        lo, hi = math.floor(since / cfg.bucket_s), math.floor(until / cfg.bucket_s)
        counts = {b: n for b, n in pool.arrivals.items() if lo <= b < hi}
        served = pool.served
        mean = pool.work_s / served if served else 0.0
        first = self.start if pool.arrivals else None
        scaler.profile = learn_profile(counts, mean, first, t, pool.lc.timezone, cfg)

    def _cron(self, pool: SimPool, t: float) -> None:
        self._resume(pool, t)
        pool.advance(t)
        if not any(r.state == "ready" and r.name not in pool.draining for r in pool.replicas) and not any(
            pool._coming(r) for r in pool.replicas
        ):
            pool.add("prewarm", prewarm="cron")
        fire = next_prewarm(pool.lc.prewarm, pool.lc.timezone, t)
        if fire is not None:
            self.schedule(fire, _CRON, pool, None)

    # -- the run -------------------------------------------------------------------------------------------------

    def run(self, until: float | None = None) -> None:
        """Replay the whole trace. The window closes at the last arrival, when the last request ends, or at
        ``until`` (epoch seconds), whichever is latest."""
        trace = self.trace
        times: list[float] = trace.t.tolist()
        models = trace.models
        model_idx: list[int] = trace.model.tolist()
        pools_by_index = [self._by_model.get(m) for m in models]
        auto = [m == "auto" and m not in self._by_model for m in models]
        heap = self._heap
        clock = self.clock
        progress = self.progress
        bucket = {
            p.name: p.lc.predictive_prewarm.bucket_s for p in self.pools.values() if p.lc.predictive_prewarm.enabled
        }
        step = max(1, len(times) // 200)
        for i, t in enumerate(times):
            while heap and heap[0][0] <= t:
                self._event(heapq.heappop(heap))
            clock.now = t
            m = model_idx[i]
            pool = pools_by_index[m]
            if pool is None:
                if not auto[m]:
                    self.unrouted[models[m]] = self.unrouted.get(models[m], 0) + 1
                    continue
                pool = self._route_auto(i, t)
                if pool is None:
                    continue
            if bucket:
                b = bucket.get(pool.name)
                if b is not None:
                    k = int(t // b)
                    pool.arrivals[k] = pool.arrivals.get(k, 0) + 1
            if pool.scaler is not None and pool.tick_at is None:
                self._resume(pool, t)
            pool.arrive(i, t)
            if progress is not None and i % step == 0:
                progress(i)
        # Requests still held or running are seen through: replicas still coming up come up and serve them.
        # The window closes at the last arrival or when the last request ends, whichever is later.
        end = max(trace.end, until or 0.0)
        # the window always-on is priced over: the traffic's span (or --until), the same for every policy
        self.window_end = end
        while heap and (heap[0][0] <= end or self._unfinished()):
            end = max(end, heap[0][0])
            self._event(heapq.heappop(heap))
        end = max([end, *(f for p in self.pools.values() for r in p.replicas for f in r.finishes)])
        clock.now = end
        self.end = end
        for pool in self.pools.values():
            pool.finish(end)
        if progress is not None:
            progress(len(times))

    def _unfinished(self) -> bool:
        return any(p.held or any(r.state == "starting" for r in p.replicas) for p in self.pools.values())

    def _event(self, item: tuple[float, int, int, SimPool, Any]) -> None:
        t, _, kind, pool, payload = item
        self.clock.now = t
        if kind == _READY:
            r, gen = payload
            pool.ready(r, gen, t)
        elif kind == _TICK:
            if pool.tick_at == t:
                self._tick(pool, t)
        else:
            self._cron(pool, t)

    def _route_auto(self, row: int, t: float) -> SimPool | None:
        """``model: auto``: the live router's decision over the pools' views at this moment."""
        text = int(self.trace.prompt_tokens[row])
        image = int(self.trace.image_tokens[row])
        features = Features(
            prompt_tokens=text + image,
            text_tokens=text,
            image_tokens=image,
            video_tokens=0,
            images=1 if image else 0,
            videos=0,
            max_tokens=self.output[row],
            code_blocks=0,
            math=0,
            tools=False,
            json_schema=False,
            depth=1,
            language="en",
            tier_hint=None,
            priority=PRIORITIES[int(self.trace.priority[row])],  # type: ignore[arg-type]
            session=None,
        )
        views = []
        for p in self.pools.values():
            p.advance(t)
            views.append(p.view(t))
        try:
            route = decide(features, PoolsSnapshot(t, tuple(views)), self.config.routing)
        except APIError as exc:
            reason = exc.code or type(exc).__name__
            self.unrouted[f"auto: {reason}"] = self.unrouted.get(f"auto: {reason}", 0) + 1
            return None
        return self.pools[route.pool]

    # -- results ----------------------------------------------------------------------------------------------

    def pool_stats(self) -> Iterator[PoolStats]:
        window = self.window_end - self.start
        for pool in self.pools.values():
            s = pool.stats
            perf = pool.perf
            usd_per_s = perf.usd_per_hour / 3600
            s.billed_s = sum(r.billed_s for r in pool.replicas)
            s.busy_s = sum(r.busy_s for r in pool.replicas)
            s.served = pool.served
            s.cold_start_s = sum(r.cold_s for r in pool.replicas)
            if not pool.managed and perf.billing != "reserved":
                s.billed_s = s.busy_s  # a url backend on demand is billed only while it serves (accounting)
            s.usd = s.billed_s * usd_per_s
            always = pool.config.replicas.max if pool.managed else 1
            s.always_on_usd = always * window * usd_per_s
            s.ideal_usd = s.busy_s * usd_per_s
            s.scale_events = dict(self.events.scale.get(pool.name, {}))
            yield s


def _run_sync(coro: Any) -> ScaleDecision:
    """Drive a coroutine that never waits (PoolScaler.tick with its inputs in memory) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        decision: ScaleDecision = done.value
        return decision
    coro.close()
    raise RuntimeError("the autoscaler waited on something in the simulator")


def percentiles(values: Sequence[float], qs: Sequence[float]) -> list[float]:
    if not values:
        return [0.0 for _ in qs]
    arr = np.asarray(values, dtype=np.float64)
    return [float(x) for x in np.percentile(arr, [q * 100 for q in qs], method="linear")]
