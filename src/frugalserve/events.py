"""Lifecycle events: the facts that GPU cost accounting, scaling reports and the simulator are built on.

The lifecycle emits one :class:`ReplicaEvent` per state transition, and the autoscaler one
:class:`ScaleEvent` per decision that changes something (or is refused), to an :class:`EventSink`. Sinks
must not block (the database sink batches writes off the event loop's hot path).
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterator, Reversible
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class ReplicaEvent:
    time: float  # wall clock, seconds since the epoch, when the transition happened
    pool: str
    replica: str
    from_state: str  # stopped | starting | ready | sleeping | stopping | failed (see lifecycle)
    to_state: str
    reason: str  # e.g. "request", "idle_sleep", "idle_stop", "prewarm", "admin", "evicted", "exited"
    duration_s: float | None = None  # how long the replica was in from_state


@dataclass(frozen=True, slots=True)
class ScaleEvent:
    """One decision of a pool's autoscaler (or predictive prewarm) and why: stored in ``scale_events``."""

    time: float  # wall clock, seconds since the epoch
    pool: str
    # scale_up | scale_down | refused (a replica could not be placed or started) | panic | calm (panic over)
    # | prewarm (predictive) | prewarm_used | prewarm_expired
    action: str
    from_replicas: int  # replicas counted before the decision
    to_replicas: int  # replicas wanted after it
    # what decided: a load signal (utilization, concurrency, upstream, kv_cache, gpu_utilization, held) or a
    # limit (min, max, floor: predictive prewarm's forecast or keeping the last replica, band, rate, cooldown);
    # refusals: placement or start_failed; prewarm outcomes: cron or predictive
    signal: str
    load: float  # the pool's load in replicas' worth of target when it decided (0 when not applicable)
    reason: str  # one line for people: the numbers behind the decision


Event = ReplicaEvent | ScaleEvent


class EventSink(Protocol):
    def submit(self, event: Event) -> None: ...


class RecentEvents:
    """Keeps the last ``size`` events in memory (tests, the admin API)."""

    def __init__(self, size: int = 10_000) -> None:
        self.events: deque[ReplicaEvent] = deque(maxlen=size)
        self.scale_events: deque[ScaleEvent] = deque(maxlen=size)

    def submit(self, event: Event) -> None:
        if isinstance(event, ScaleEvent):
            self.scale_events.append(event)
        else:
            self.events.append(event)

    def scale_events_of(self, pool: str, limit: int) -> list[ScaleEvent]:
        """The pool's last ``limit`` scale events, oldest first."""
        out = [e for e in reversed(self.scale_events) if e.pool == pool][:limit]
        return out[::-1]

    def newest(self, pool: str | None, limit: int) -> list[Event]:
        """The last ``limit`` events of both kinds (of ``pool``, or of every pool), newest first."""

        def newest_first(events: Reversible[Event]) -> Iterator[Event]:
            return (e for e in reversed(events) if pool is None or e.pool == pool)

        both = heapq.merge(newest_first(self.events), newest_first(self.scale_events), key=lambda e: -e.time)
        return list(itertools.islice(both, limit))


class FanoutEvents:
    """Hands each event to several sinks (the database writer and the in-memory history)."""

    def __init__(self, sinks: list[EventSink]) -> None:
        self.sinks = sinks

    def submit(self, event: Event) -> None:
        for sink in self.sinks:
            sink.submit(event)
