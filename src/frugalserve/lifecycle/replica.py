"""One replica of a managed pool, owned by a single asyncio task: the only code that changes its state.

Requests and the admin API talk to the owner through a mailbox (:meth:`Replica.ensure_ready`,
:meth:`Replica.request_sleep`, :meth:`Replica.request_stop`, :meth:`Replica.evict`); the owner runs the
commands one at a time, and between commands asks the pure policies whether to sleep or stop (the idle
ladder) and probes health. Leases (``in_flight``) are counted synchronously by the pool.

What ``ensure_ready()`` does in each state:

``stopped``   no process. The owner makes room on the GPU device if needed, launches the backend
              (→ ``starting``), waits for its health check (→ ``ready``). Every caller waits on the same start.
``starting``  a start or wake is under way: wait for it (the owner handles commands one at a time, so a
              burst of requests starts the backend exactly once).
``ready``     returns at once.
``sleeping``  the process is up with its GPU memory freed (vLLM sleep). Make room, ``POST /wake_up``
              (→ ``starting``, reason ``wake``) → ``ready``: much faster than a start.
``stopping``  the owner is putting it to sleep or stopping it: wait for that, then start or wake it.
``failed``    it exited, failed its health checks or failed to start. Restart after the backoff
              (0 after the first failure, then ``restart_backoff_s`` doubling up to ``restart_backoff_max_s``).
              A failed start fails every request waiting for it with 503 at once.

Sleep and stop never touch a replica with requests in flight. An admin sleep/stop while requests run
waits for them (drain); a request that arrives during the drain cancels it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from frugalserve.clock import Clock
from frugalserve.config import PoolConfig
from frugalserve.errors import ServiceUnavailable
from frugalserve.events import EventSink, ReplicaEvent
from frugalserve.lifecycle.config import LifecycleConfig
from frugalserve.lifecycle.devices import Device
from frugalserve.lifecycle.metrics import LifecycleMetrics
from frugalserve.lifecycle.policy import (
    IdleDecision,
    ReplicaView,
    State,
    failures_after_crash,
    idle_decision,
    restart_delay,
)
from frugalserve.lifecycle.provisioners import PlacementRefused, Provisioner, StartFailed
from frugalserve.metrics.cost import BilledClock

log = logging.getLogger("frugalserve.lifecycle")

Kind = Literal["up", "sleep", "stop", "evict", "exited", "kick"]
UNHEALTHY_AFTER = 3  # failed health probes in a row


@dataclass(frozen=True, slots=True)
class Started:
    """A start or wake that reached ``ready``."""

    s: float  # how long it took
    at: float  # wall time it became ready


@dataclass
class _Command:
    kind: Kind
    reason: str = ""
    future: asyncio.Future[Any] | None = None
    generation: int = 0


@dataclass
class _Drain:
    action: Literal["sleep", "stop"]
    reason: str
    futures: list[asyncio.Future[Any]] = field(default_factory=list)


class Replica:
    def __init__(
        self,
        pool: PoolConfig,
        name: str,
        provisioner: Provisioner,
        clock: Clock,
        events: EventSink,
        metrics: LifecycleMetrics,
        device: Device | None = None,
    ) -> None:
        self.config = pool
        self.pool = pool.name
        self.name = name
        self.provisioner = provisioner
        self.clock = clock
        self.events = events
        self.metrics = metrics
        self.device = device
        self.memory_gb = pool.gpu.memory_gb if device is not None else 0.0
        self.state: State = "stopped"
        now = clock.monotonic()
        self.since = now
        self.since_wall = clock.wall()
        self.in_flight = 0
        self.last_used = now
        self.last_ready = now
        self.base_url = ""
        self.failures = 0
        self.last_error: str | None = None
        self.refused = False  # the last start failed for want of room (PlacementRefused), not a broken backend
        self.last_cold_start_s: float | None = None
        self.recent_starts: dict[str, deque[float]] = {"start": deque(maxlen=10), "wake": deque(maxlen=10)}
        # The last start and the last wake that reached ready: how long each took, and when (wall) it was ready.
        self.last_started: dict[str, Started | None] = {"start": None, "wake": None}
        self._mail: deque[_Command] = deque()
        self._mail_event = asyncio.Event()
        self._drain: _Drain | None = None
        self._generation = 0  # bumps at each start, so a stale exit notice is ignored
        self._watcher: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._bad_probes = 0
        self._next_probe = 0.0
        self.billed = BilledClock(clock, pool, self.state)  # its share of /metrics' cost series
        metrics.meter.add(pool, self.billed)
        # Set by the pool: told of every state change; whether the idle ladder applies (not to a pool's
        # ``replicas.min`` floor); which prewarm brought it up, until its first request or its going down.
        self.on_change: Callable[[Replica], None] | None = None
        self.idle_ladder = True
        self.prewarmed: str | None = None
        # Set by the pool with ``lifecycle.idle: auto``: the lifecycle config carrying the idle thresholds in
        # force at a time (frugalserve.lifecycle.idle_auto); None: the configured ones.
        self.idle_config: Callable[[float], LifecycleConfig] | None = None

    # -- what others may call ------------------------------------------------------------------------

    def start_owner(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"replica {self.name}")

    async def shutdown(self) -> None:
        """End the owner task, whatever it is doing (a start included), and stop the backend."""
        task, self._task = self._task, None
        if task is None:
            await self.provisioner.aclose()
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def ensure_ready(self, reason: str = "request") -> None:
        """Return once the replica is ready (see the module docstring); raise 503 when it cannot start."""
        while self.state != "ready":
            await self._ask("up", reason)

    async def request_sleep(self, reason: str = "admin") -> str:
        return str(await self._ask("sleep", reason))

    async def request_stop(self, reason: str = "admin") -> str:
        return str(await self._ask("stop", reason))

    async def evict(self) -> bool:
        """Sleep (or stop) this replica to free its GPU memory, only if it is idle; True when it did."""
        return bool(await self._ask("evict", "evicted"))

    def set_idle_ladder(self, on: bool) -> None:
        """The pool decides whether the idle ladder applies to this replica now; the owner re-reads its timer."""
        if on != self.idle_ladder:
            self.idle_ladder = on
            self._post(_Command("kick"))

    def rearm(self) -> None:
        """The idle thresholds changed: the owner re-reads its timer."""
        self._post(_Command("kick"))

    def lease(self) -> None:
        """Count a request in flight; the caller checked ``state == "ready"`` without awaiting since."""
        self.in_flight += 1
        if self.in_flight == 1:
            self.billed.busy(True)
        if self._drain is not None:  # a request during a drain cancels it
            drain, self._drain = self._drain, None
            for fut in drain.futures:
                if not fut.done():
                    fut.set_result("cancelled: a request arrived during the drain")

    def release(self) -> None:
        self.in_flight -= 1
        self.last_used = max(self.last_used, self.clock.monotonic())
        if self.in_flight == 0:
            self.billed.busy(False)
            self._post(_Command("kick"))

    def view(self) -> ReplicaView:
        return ReplicaView(
            self.pool,
            self.name,
            self.state,
            self.in_flight,
            self.last_used,
            self.last_ready,
            self.memory_gb,
            self.provisioner.can_sleep,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "since": self.since_wall,
            "in_flight": self.in_flight,
            "draining": self._drain.action if self._drain else None,
            "last_cold_start_s": self.last_cold_start_s,
            "last_start": self._started("start"),
            "last_wake": self._started("wake"),
            "failures": self.failures,
            "last_error": self.last_error,
            "can_sleep": self.provisioner.can_sleep,
            "url": self.base_url or None,
            "memory_gb": self.memory_gb,
            # where a cluster placed it (Ray: node, GPU ids, pids, log path); absent for a local process
            **({"placement": placement} if (placement := getattr(self.provisioner, "placement", None)) else {}),
        }

    def _started(self, kind: str) -> dict[str, float] | None:
        started = self.last_started[kind]
        return None if started is None else {"s": started.s, "at": started.at}

    # -- mailbox ---------------------------------------------------------------------------------

    def _post(self, cmd: _Command) -> None:
        self._mail.append(cmd)
        self._mail_event.set()

    async def _ask(self, kind: Kind, reason: str) -> Any:
        if self._task is None or self._task.done():
            raise ServiceUnavailable(f"pool {self.pool!r} is shutting down.")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._post(_Command(kind, reason, fut))
        return await fut

    async def _next_command(self) -> _Command | None:
        """The next command, or None when the timer (idle ladder, health probe) is due first."""
        while not self._mail:
            self._mail_event.clear()
            wake_at = self._timer_at()
            if wake_at is None:
                await self._mail_event.wait()
                continue
            delay = wake_at - self.clock.monotonic()
            if delay <= 0:
                return None
            waiter = asyncio.ensure_future(self._mail_event.wait())
            timer = asyncio.ensure_future(self.clock.sleep(delay))
            try:
                await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()
                timer.cancel()
            if not self._mail:
                return None
        return self._mail.popleft()

    def _idle(self, now: float) -> IdleDecision:
        if not self.idle_ladder:
            return IdleDecision(None, None)
        cfg = self.idle_config(now) if self.idle_config is not None else self.config.lifecycle
        return idle_decision(self.view(), now, cfg)

    def _timer_at(self) -> float | None:
        times = []
        decision = self._idle(self.clock.monotonic())
        if decision.action is not None:
            return self.clock.monotonic()
        if decision.check_at is not None:
            times.append(decision.check_at)
        if self.state == "ready":
            times.append(self._next_probe)
        return min(times) if times else None

    # -- the owner ---------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while True:
                cmd = await self._next_command()
                if cmd is None:
                    await self._on_timer()
                    continue
                try:
                    result = await self._handle(cmd)
                except Exception as exc:
                    self._resolve_error(cmd, exc)
                else:
                    self._resolve(cmd, result)
        finally:
            self._fail_mail(ServiceUnavailable(f"pool {self.pool!r} is shutting down."))
            if self._watcher is not None:
                self._watcher.cancel()
            await self.provisioner.aclose()
            if self.state != "stopped":
                self._set_state("stopped", "shutdown")

    async def _handle(self, cmd: _Command) -> Any:
        if cmd.kind == "up":
            if self.state != "ready":
                try:
                    await self._bring_up(cmd.reason)
                except ServiceUnavailable as exc:
                    self._fail_waiting_ups(exc)
                    raise
            return "ready"
        if cmd.kind in ("sleep", "stop"):
            if self.state == "ready" and self.in_flight > 0:
                if self._drain is None or self._drain.action != cmd.kind:
                    self._drain = _Drain(cmd.kind, cmd.reason)
                assert cmd.future is not None
                self._drain.futures.append(cmd.future)
                cmd.future = None  # resolved when the drain ends
                return None
            return await (self._sleep(cmd.reason) if cmd.kind == "sleep" else self._stop(cmd.reason))
        if cmd.kind == "evict":
            if self.state != "ready" or self.in_flight > 0:
                return False
            await self._sleep("evicted")
            return True
        if cmd.kind == "exited":
            if cmd.generation == self._generation and self.state in ("ready", "sleeping"):
                await self._fail("exited", f"the backend exited (log: {self._log_hint()})")
            return None
        if cmd.kind == "kick":
            if self._drain is not None and self.in_flight == 0:
                drain, self._drain = self._drain, None
                result = await (self._sleep(drain.reason) if drain.action == "sleep" else self._stop(drain.reason))
                for fut in drain.futures:
                    if not fut.done():
                        fut.set_result(result)
            return None
        raise AssertionError(cmd.kind)

    async def _on_timer(self) -> None:
        now = self.clock.monotonic()
        decision = self._idle(now)
        if decision.action == "sleep":
            await self._sleep("idle_sleep")
        elif decision.action == "stop":
            await self._stop("idle_stop")
        elif self.state == "ready" and now >= self._next_probe:
            self._next_probe = now + self.config.lifecycle.health_interval_s
            if await self.provisioner.healthy():
                self._bad_probes = 0
            else:
                self._bad_probes += 1
                if self._bad_probes >= UNHEALTHY_AFTER and self.state == "ready":
                    await self._fail("unhealthy", f"{UNHEALTHY_AFTER} health checks in a row failed")

    # -- effects -------------------------------------------------------------------------------------

    def _set_state(self, to: State, reason: str) -> None:
        now = self.clock.monotonic()
        event = ReplicaEvent(self.clock.wall(), self.pool, self.name, self.state, to, reason, now - self.since)
        self.state, self.since, self.since_wall = to, now, event.time
        self.billed.state(to)
        self.metrics.transitions.labels(self.pool, to, reason).inc()
        log.info("%s: %s -> %s (%s)", self.name, event.from_state, to, reason)
        self.events.submit(event)
        if self.on_change is not None:
            self.on_change(self)

    async def _bring_up(self, reason: str) -> None:
        lc = self.config.lifecycle
        if self.state == "failed":
            wait = restart_delay(self.failures, lc.restart_backoff_s, lc.restart_backoff_max_s)
            wait -= self.clock.monotonic() - self.since
            if wait > 0:
                await self.clock.sleep(wait)
        if self.device is not None:
            await self.device.make_room(self, lc.max_wait_s)
        waking = self.state == "sleeping"
        kind = "wake" if waking else "start"
        t0 = self.clock.monotonic()
        self._set_state("starting", "wake" if waking else reason)
        try:
            if waking:
                await self.provisioner.wake()
            else:
                self._generation += 1
                self.base_url = await self.provisioner.start()
        except (StartFailed, OSError, TimeoutError) as exc:
            self.refused = isinstance(exc, PlacementRefused)
            await self._fail("refused" if self.refused else "start_failed", str(exc) or type(exc).__name__)
            raise ServiceUnavailable(
                f"pool {self.pool!r}: the backend failed to {kind}: {self.last_error}",
                headers={"Retry-After": str(max(1, round(self._backoff())))},
            ) from None
        except Exception as exc:  # aiohttp errors from wake, and bugs: never leave it half up
            await self._fail("start_failed", f"{type(exc).__name__}: {exc}")
            raise ServiceUnavailable(f"pool {self.pool!r}: the backend failed to {kind}.") from None
        took = self.clock.monotonic() - t0
        now = self.clock.monotonic()
        self.last_ready = self.last_used = now
        self._next_probe = now + lc.health_interval_s
        self._bad_probes = 0
        self.last_cold_start_s = took
        self.recent_starts[kind].append(took)
        self.last_started[kind] = Started(took, self.clock.wall())
        level = str(lc.sleep_level) if waking else "0"
        self.metrics.cold_starts.labels(self.pool, kind, level).inc()
        self.metrics.cold_start_seconds.labels(self.pool, kind, level).observe(took)
        self._set_state("ready", reason)
        if not waking:
            self._watch_exit()

    def _backoff(self) -> float:
        lc = self.config.lifecycle
        return restart_delay(self.failures + 1, lc.restart_backoff_s, lc.restart_backoff_max_s)

    def _watch_exit(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        generation = self._generation

        async def watch() -> None:
            await self.provisioner.wait_exit()
            self._post(_Command("exited", generation=generation))

        self._watcher = asyncio.get_running_loop().create_task(watch())

    async def _sleep(self, reason: str) -> str:
        if self.state != "ready":
            return self.state
        if not self.provisioner.can_sleep:
            return await self._stop(reason)
        self._set_state("stopping", reason)
        try:
            await self.provisioner.sleep(self.config.lifecycle.sleep_level)
        except Exception as exc:
            await self._fail("sleep_failed", f"{type(exc).__name__}: {exc}")
            return self.state
        self._set_state("sleeping", reason)
        return self.state

    async def _stop(self, reason: str) -> str:
        if self.state in ("stopped",):
            return self.state
        if self.state != "failed":
            self._set_state("stopping", reason)
        self._generation += 1  # the exit that follows is expected
        await self.provisioner.stop()
        self.base_url = ""
        self._set_state("stopped", reason)
        return self.state

    async def _fail(self, reason: str, message: str) -> None:
        lc = self.config.lifecycle
        ready_for = self.clock.monotonic() - self.since if self.state == "ready" else 0.0
        self.failures = failures_after_crash(self.failures, ready_for, lc.restart_backoff_max_s)
        self.last_error = message
        self._generation += 1
        await self.provisioner.stop()  # the rest of its process group, and its log file
        self.base_url = ""
        self._set_state("failed", reason)
        log.warning("%s failed (%s): %s", self.name, reason, message)

    def _log_hint(self) -> str:
        return str(getattr(self.provisioner, "log_path", "-"))

    # -- resolving waiters -------------------------------------------------------------------------

    @staticmethod
    def _resolve(cmd: _Command, result: Any) -> None:
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_result(result)

    @staticmethod
    def _resolve_error(cmd: _Command, exc: BaseException) -> None:
        if cmd.future is not None and not cmd.future.done():
            cmd.future.set_exception(exc)
        elif cmd.future is None and not isinstance(exc, ServiceUnavailable):
            log.exception("replica command %s failed", cmd.kind, exc_info=exc)

    def _fail_waiting_ups(self, exc: BaseException) -> None:
        """A failed start fails every request waiting for it, instead of starting again for each."""
        keep: deque[_Command] = deque()
        for cmd in self._mail:
            if cmd.kind == "up":
                self._resolve_error(cmd, exc)
            else:
                keep.append(cmd)
        self._mail = keep

    def _fail_mail(self, exc: BaseException) -> None:
        for cmd in self._mail:
            self._resolve_error(cmd, exc)
        self._mail.clear()
        if self._drain is not None:
            for fut in self._drain.futures:
                if not fut.done():
                    fut.set_exception(exc)
            self._drain = None
