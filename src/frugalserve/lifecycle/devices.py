"""GPU memory per device, shared by the pools that name it; makes room by evicting idle replicas.

Memory is derived from replica states, not booked separately: a replica that is starting, ready or
stopping holds its ``gpu.memory_gb``; a sleeping, stopped or failed one holds none (vLLM's sleep
frees the weights and the KV cache). Choosing whom to evict is the pure
:func:`~frugalserve.lifecycle.policy.choose_evictions`; this module carries the choice out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from frugalserve.clock import Clock
from frugalserve.errors import ServiceUnavailable
from frugalserve.lifecycle.policy import choose_evictions

if TYPE_CHECKING:
    from frugalserve.lifecycle.replica import Replica

HOLDS_MEMORY = ("starting", "ready", "stopping")


class Device:
    def __init__(self, name: str, memory_gb: float, clock: Clock) -> None:
        self.name = name
        self.memory_gb = memory_gb
        self.clock = clock
        self.replicas: list[Replica] = []

    def used_gb(self, exclude: Replica | None = None) -> float:
        return sum(r.memory_gb for r in self.replicas if r is not exclude and r.state in HOLDS_MEMORY)

    async def make_room(self, replica: Replica, max_wait_s: float) -> None:
        """Return once ``replica`` fits; the caller must enter ``starting`` before its next await.

        Idle replicas are put to sleep or stopped, least recently used first. While the others are busy
        this waits up to ``max_wait_s``; then, or when it can never fit, it raises 503.
        """
        need = replica.memory_gb
        if need > self.memory_gb:
            raise ServiceUnavailable(
                f"pool {replica.pool!r} needs {need:g} GB but device {self.name!r} has {self.memory_gb:g} GB."
            )
        deadline = self.clock.monotonic() + max_wait_s
        while True:
            free = self.memory_gb - self.used_gb(exclude=replica)
            others = [r.view() for r in self.replicas if r is not replica]
            victims = choose_evictions(others, need, free)
            if victims == []:
                return
            if victims is not None:
                by_name = {r.name: r for r in self.replicas}
                for v in victims:
                    await by_name[v.replica].evict()
                continue
            if self.clock.monotonic() >= deadline:
                others_desc = (f"{r.pool} ({r.state}, {r.in_flight} busy)" for r in self.replicas if r is not replica)
                busy = ", ".join(others_desc)
                raise ServiceUnavailable(
                    f"device {self.name!r} has no room for pool {replica.pool!r} ({need:g} GB): busy with {busy}.",
                    headers={"Retry-After": "5"},
                )
            await self.clock.sleep(0.1)
