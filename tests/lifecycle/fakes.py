"""An in-process stand-in for a backend process (a Provisioner), for lifecycle tests on a ManualClock."""

from __future__ import annotations

import asyncio

from frugalserve.clock import Clock, ManualClock
from frugalserve.lifecycle.provisioners import PlacementRefused, StartFailed


class FakeProvisioner:
    def __init__(self, clock: Clock, start_s: float = 5.0, wake_s: float = 0.5, can_sleep: bool = True) -> None:
        self.clock = clock
        self.start_s = start_s
        self.wake_s = wake_s
        self.can_sleep = can_sleep
        self.calls: list[str] = []
        self.fail_starts = 0
        self.refuse_starts = 0  # starts that fail as a cluster without room would refuse them
        self.running = False
        self._exit: asyncio.Future[int] | None = None

    async def start(self) -> str:
        self.calls.append("start")
        if self.refuse_starts:
            self.refuse_starts -= 1
            raise PlacementRefused("fake cluster: no node with 1 free GPU")
        await self.clock.sleep(self.start_s)
        if self.fail_starts:
            self.fail_starts -= 1
            raise StartFailed("fake start failure")
        self.running = True
        self._exit = asyncio.get_running_loop().create_future()
        return "http://127.0.0.1:1"

    async def stop(self) -> None:
        if self.running:
            self.calls.append("stop")
        self.running = False
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(0)

    async def sleep(self, level: int) -> None:
        self.calls.append(f"sleep{level}")

    async def wake(self) -> None:
        self.calls.append("wake")
        await self.clock.sleep(self.wake_s)

    async def healthy(self) -> bool:
        return self.running

    async def wait_exit(self) -> int:
        assert self._exit is not None
        return await self._exit

    def crash(self) -> None:
        self.running = False
        if self._exit is not None and not self._exit.done():
            self._exit.set_result(-9)

    async def aclose(self) -> None:
        await self.stop()


async def settle() -> None:
    """Let every task that is ready run until it waits again (the manual clock moves nothing by itself)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def advance(clock: ManualClock, seconds: float, step: float = 0.25) -> None:
    """Move the manual clock forward in steps, letting every task run between them (timers fire in order)."""
    await settle()
    while seconds > 1e-9:
        await clock.advance(min(step, seconds))
        seconds -= step
        await settle()
