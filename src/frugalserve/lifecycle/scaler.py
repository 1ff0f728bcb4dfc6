"""The autoscaler's effect loop: one task per pool that reads the signals, asks the pure policies, acts.

Every ``autoscale.interval_s`` it builds a :class:`~frugalserve.lifecycle.autoscale.ScaleInput` from the
pool's replicas (in flight, held), the replicas' own ``/metrics`` (running, waiting, KV cache: kept by
frugalserve.metrics.upstream) and NVML (frugalserve.metrics.gpu), and, with predictive prewarm on, the
forecast of :func:`~frugalserve.lifecycle.prewarm.prewarm_decision` as a floor; then
:func:`~frugalserve.lifecycle.autoscale.desired_replicas` decides and the pool adds or drains replicas.
Every decision that changes something, each refusal, panic and prewarm is a :class:`ScaleEvent` (the
events table, ``/admin/pools``) and a metric. The arrival profile is re-learnt from the usage records
every ``refresh_s``, in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from frugalserve.clock import Clock
from frugalserve.events import EventSink, ScaleEvent
from frugalserve.lifecycle.autoscale import ReplicaSignals, ScaleDecision, ScaleHistory, ScaleInput, desired_replicas
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.prewarm import (
    ArrivalProfile,
    PrewarmDecision,
    PrewarmInput,
    learn_profile,
    learning_window,
    prewarm_decision,
)
from frugalserve.routing.config import RoutingConfig
from frugalserve.tasks import stop_task

if TYPE_CHECKING:
    from frugalserve.accounting.arrivals import Arrivals
    from frugalserve.lifecycle.pool import ManagedPool
    from frugalserve.metrics.gpu import GpuTelemetry
    from frugalserve.metrics.upstream import UpstreamTelemetry

log = logging.getLogger("frugalserve.lifecycle")

# (pool, since, until, bucket_s) -> the pool's arrivals; blocking (a database query), run in a worker thread
ArrivalsReader = Callable[[str, float, float, float], "Arrivals"]


class ScaleSignals:
    """What the gateway's telemetry knows, for the scalers; the gateway hands its sources in before start."""

    def __init__(self, upstream: UpstreamTelemetry | None = None, gpus: GpuTelemetry | None = None) -> None:
        self.upstream = upstream
        self.gpus = gpus

    def replica_signals(self, pool: ManagedPool, now: float) -> tuple[ReplicaSignals, ...]:
        samples = {}
        if self.upstream is not None and self.upstream.enabled:
            samples = {s.replica: s for s in self.upstream.samples(now) if s.pool == pool.name and s.fresh}
        gpu = self.gpu_utilization(pool.name)
        out = []
        for r in pool.counted():
            s = samples.get(r.name)
            ready = r.state == "ready"
            out.append(
                ReplicaSignals(
                    name=r.name,
                    ready=ready,
                    in_flight=r.in_flight,
                    running=s.running if s is not None else None,
                    waiting=s.waiting if s is not None else None,
                    kv_cache_usage=s.kv_cache_usage if s is not None else None,
                    gpu_utilization=gpu if ready else None,
                )
            )
        return tuple(out)

    def gpu_utilization(self, pool: str) -> float | None:
        """The mean duty cycle of the pool's GPUs that NVML sees here (None: none seen, e.g. on Ray nodes)."""
        if self.gpus is None:
            return None
        values = [s.utilization_ratio for s in self.gpus.by_pool().get(pool, ()) if s.utilization_ratio is not None]
        return sum(values) / len(values) if values else None


class PoolScaler:
    """Owns one pool's autoscaling history and carries its decisions out (the pool owns the replicas)."""

    def __init__(
        self,
        pool: ManagedPool,
        signals: ScaleSignals,
        clock: Clock,
        events: EventSink,
        metrics: LifecycleMetrics,
        routing: RoutingConfig,
        arrivals: ArrivalsReader | None = None,
    ) -> None:
        self.pool = pool
        self.signals = signals
        self.clock = clock
        self.events = events
        self.metrics = metrics
        self.arrivals = arrivals
        cfg = pool.config
        self.cfg = cfg.autoscale
        self.predictive = cfg.lifecycle.predictive_prewarm
        self.objective_s = routing.objective(cfg.tier).slo_ms / 1000.0 if cfg.tier is not None else None
        self.history = ScaleHistory()
        self.last: ScaleDecision | None = None
        self.profile: ArrivalProfile | None = None
        self.forecast: PrewarmDecision | None = None
        self.recent: deque[ScaleEvent] = deque(maxlen=20)
        self._learnt_at: float | None = None
        self._task: asyncio.Task[None] | None = None
        # the pool's own series, looked up once: a tick sets them every interval_s
        self._desired = metrics.desired_replicas.labels(pool.name)
        self._load = metrics.scale_load.labels(pool.name)
        self._panic = metrics.panic.labels(pool.name)
        self._desired.set(0)
        self._panic.set(0)

    @staticmethod
    def wanted(pool: ManagedPool) -> bool:
        """A pool of one replica that may scale to zero needs no autoscaler (requests wake it)."""
        cfg = pool.config
        return cfg.replicas.max > 1 or cfg.replicas.min > 0 or cfg.lifecycle.predictive_prewarm.enabled

    def start(self) -> None:
        if self.predictive.enabled and self.arrivals is None:
            log.warning(
                "pool %s: predictive prewarm learns from the usage records, but accounting is off: it will not prewarm",
                self.pool.name,
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"autoscaler {self.pool.name}")

    async def stop(self) -> None:
        await stop_task(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:  # a bug in one decision must not end autoscaling for good
                log.exception("pool %s: an autoscaler tick failed", self.pool.name)
            await self.clock.sleep(self.cfg.interval_s)

    # -- one decision ------------------------------------------------------------------------------------

    async def tick(self) -> ScaleDecision:
        now = self.clock.monotonic()
        floor = 0
        if self.predictive.enabled:
            await self._learn()
            self.forecast = self._forecast()
            floor = min(self.forecast.replicas, self.pool.config.replicas.max)
            # A predictive prewarm that expired unused in this slot is not repeated until the next one:
            # the forecast was wrong today, and waking it again every linger would only burn money.
            expired = self.pool.last_expired.get("predictive")
            bucket = self.predictive.bucket_s
            if expired is not None and expired // bucket == self.clock.wall() // bucket:
                floor = 0
        inp = ScaleInput(
            now=now,
            capacity=self.pool.config.capacity,
            replicas=self.signals.replica_signals(self.pool, now),
            held=self.pool.waiting,
            bounds=self.pool.config.replicas,
            floor=floor,
        )
        decision = desired_replicas(inp, self.history, self.cfg)
        self.history = decision.history
        self.last = decision
        self._desired.set(decision.desired)
        self._load.set(decision.load)
        self._panic.set(int(decision.panic))
        if decision.entered_panic:
            self._event("panic", decision, decision.desired)
        if decision.left_panic:
            self._event("calm", decision, decision.desired)
        self._carry_out(decision)
        return decision

    def _carry_out(self, decision: ScaleDecision) -> None:
        n = decision.desired - decision.current
        if n > 0:
            prewarm = "predictive" if decision.signal == "floor" else None
            reason = "predictive_prewarm" if prewarm else "scale_up"
            added = 0
            for _ in range(n):
                if self.pool.add(reason, prewarm=prewarm, on_refused=self._refused) is None:
                    break
                added += 1
            if added:
                action = "prewarm" if prewarm else "scale_up"
                self._event(action, decision, decision.current + added)
        elif n < 0:
            removed = 0
            for _ in range(-n):
                if self.pool.remove("scale_down") is None:
                    break
                removed += 1
            if removed:
                self._event("scale_down", decision, decision.current - removed)

    def _refused(self, replica: str, message: str, placement: bool) -> None:
        n = len(self.pool.counted())
        signal = "placement" if placement else "start_failed"
        self.metrics.scale_decisions.labels(self.pool.name, "refused", signal).inc()
        self._submit(
            ScaleEvent(self.clock.wall(), self.pool.name, "refused", n + 1, n, signal, 0.0, f"{replica}: {message}")
        )

    def _event(self, action: str, decision: ScaleDecision, to: int) -> None:
        if action in ("scale_up", "scale_down", "prewarm"):
            self.metrics.scale_decisions.labels(self.pool.name, action, decision.signal).inc()
        reason = decision.reason
        if action == "prewarm" and self.forecast is not None:
            reason = self.forecast.reason
        event = ScaleEvent(
            self.clock.wall(), self.pool.name, action, decision.current, to, decision.signal, decision.load, reason
        )
        log.info("pool %s: %s %d -> %d (%s)", self.pool.name, action, decision.current, to, reason)
        self._submit(event)

    def _submit(self, event: ScaleEvent) -> None:
        self.recent.append(event)
        self.events.submit(event)

    # -- predictive prewarm --------------------------------------------------------------------------------

    async def _learn(self) -> None:
        """Re-learn the arrival profile from the usage records every ``refresh_s`` (a query in a thread)."""
        now = self.clock.monotonic()
        if self.arrivals is None or (self._learnt_at is not None and now - self._learnt_at < self.predictive.refresh_s):
            return
        self._learnt_at = now
        now_wall = self.clock.wall()
        since, until = learning_window(now_wall, self.predictive)
        try:
            got = await asyncio.to_thread(self.arrivals, self.pool.name, since, until, self.predictive.bucket_s)
        except Exception as exc:  # the database may be down: keep the last profile, try at the next refresh
            log.warning("pool %s: cannot read arrivals for predictive prewarm: %s", self.pool.name, exc)
            return
        tz = self.pool.config.lifecycle.timezone
        self.profile = learn_profile(got.counts, got.mean_duration_s, got.first_record, now_wall, tz, self.predictive)

    def _forecast(self) -> PrewarmDecision:
        pool = self.pool
        if self.profile is None:  # nothing read yet (or no records to read): an empty profile, built once
            tz = pool.config.lifecycle.timezone
            self.profile = learn_profile({}, 0.0, None, self.clock.wall(), tz, self.predictive)
        profile = self.profile
        view = pool.view(self.clock.monotonic())
        sleeping = any(r.state == "sleeping" for r in pool.replicas)
        return prewarm_decision(
            profile,
            PrewarmInput(
                now_wall=self.clock.wall(),
                warm_replicas=len(pool.counted()),
                cold_s=view.wake_s if sleeping else view.start_s,
                usd_per_hour=view.usd_per_hour,
                linger_s=view.linger_s,
                capacity=pool.config.capacity,
                target=self.cfg.target_fraction(pool.config.capacity),
                objective_s=self.objective_s,
            ),
            self.predictive,
        )

    # -- admin -----------------------------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        d = self.last
        out: dict[str, Any] = {
            "desired": d.desired if d is not None else None,
            "load": round(d.load, 3) if d is not None else None,
            "panic": d.panic if d is not None else False,
            "last_decision": d.reason if d is not None else None,
            "events": [
                {
                    "time": e.time,
                    "action": e.action,
                    "from": e.from_replicas,
                    "to": e.to_replicas,
                    "signal": e.signal,
                    "reason": e.reason,
                }
                for e in self.recent
            ],
        }
        if self.predictive.enabled:
            f = self.forecast
            out["forecast"] = (
                None
                if f is None
                else {
                    "replicas": f.replicas,
                    "expected_arrivals": round(f.expected_arrivals, 3),
                    "wait_cost_usd": round(f.wait_cost_usd, 6),
                    "idle_cost_usd": round(f.idle_cost_usd, 6),
                    "reason": f.reason,
                    "weeks_learnt": self.profile.weeks if self.profile is not None else 0,
                }
            )
        return out
