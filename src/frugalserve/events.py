"""Replica lifecycle events: the facts that GPU cost accounting and the simulator are built on.

The lifecycle emits one :class:`ReplicaEvent` per state transition to an :class:`EventSink`. Sinks
must not block (the database sink batches writes off the event loop's hot path).
"""

from __future__ import annotations

from collections import deque
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


class EventSink(Protocol):
    def submit(self, event: ReplicaEvent) -> None: ...


class RecentEvents:
    """Keeps the last ``size`` events in memory (tests, the admin API)."""

    def __init__(self, size: int = 10_000) -> None:
        self.events: deque[ReplicaEvent] = deque(maxlen=size)

    def submit(self, event: ReplicaEvent) -> None:
        self.events.append(event)


class FanoutEvents:
    """Hands each event to several sinks (the database writer and the in-memory history)."""

    def __init__(self, sinks: list[EventSink]) -> None:
        self.sinks = sinks

    def submit(self, event: ReplicaEvent) -> None:
        for sink in self.sinks:
            sink.submit(event)
