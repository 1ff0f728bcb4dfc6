"""The ``lifecycle:`` section of a pool: when a managed backend sleeps, stops, wakes and how requests wait.

Parsed by :func:`frugalserve.config.parse` like every other section; defaults live here only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from frugalserve.config_errors import ConfigError


@dataclass(frozen=True)
class LifecycleConfig:
    # The idle ladder. null disables a step. Idle = no request in flight and none ended for this long.
    idle_sleep_s: float | None = 300.0  # → sleep (vLLM sleep API), or stop when the backend cannot sleep
    idle_stop_s: float | None = 1800.0  # → stop the process (frees CPU memory too)
    min_warm_s: float = 0.0  # after each start or wake, stay up at least this long (e.g. 600 when starts cost minutes)
    sleep_level: Literal[1, 2] = 1  # vLLM: 1 = weights to CPU memory (fast wake), 2 = weights dropped
    # Holding requests while the pool is cold.
    max_wait_s: float = 300.0  # longest a request waits for a replica; then 503 with Retry-After
    max_queue: int = 1000  # requests held at once; more get 503 at once
    keepalive_s: float = 5.0  # streaming requests: SSE comment ": waiting for a replica" this often
    # Failure handling.
    health_interval_s: float = 10.0  # health probe of a ready replica; 3 failures in a row = failed
    restart_backoff_s: float = 1.0  # delay before the 2nd restart in a row; doubles each time
    restart_backoff_max_s: float = 60.0  # cap; a replica that stayed up this long resets the backoff
    # Prewarm: cron expressions ("minute hour day month weekday") in `timezone` that wake the pool.
    prewarm: tuple[str, ...] = ()
    timezone: str = "UTC"

    def validate(self, path: str) -> None:
        for name in ("idle_sleep_s", "idle_stop_s"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0 (or null to disable)")
        for name in ("max_wait_s", "keepalive_s", "health_interval_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{path}.{name}", "must be > 0")
        for name in ("min_warm_s", "restart_backoff_s", "restart_backoff_max_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{path}.{name}", "must be >= 0")
        if self.max_queue < 1:
            raise ConfigError(f"{path}.max_queue", "must be >= 1")
        from frugalserve.lifecycle.cron import CronError, check_schedule, check_timezone

        try:
            check_timezone(self.timezone)
        except CronError as exc:
            raise ConfigError(f"{path}.timezone", str(exc)) from None
        for i, expr in enumerate(self.prewarm):
            try:
                check_schedule(expr)
            except CronError as exc:
                raise ConfigError(f"{path}.prewarm[{i}]", str(exc)) from None
