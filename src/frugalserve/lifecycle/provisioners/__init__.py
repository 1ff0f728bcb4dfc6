"""Provisioners: the one interface through which a replica's backend is started, slept, woken and stopped.

``command`` runs the backend as a local process (:mod:`.command`); ``ray`` runs it from a Ray actor on a
node of a Ray cluster (:mod:`.ray`). The replica owner (frugalserve.lifecycle.replica) treats them alike;
tests use a fake with the same methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from frugalserve.clock import Clock

T = TypeVar("T")


class StartFailed(Exception):
    """The backend did not become healthy; the message says why and where its log is."""


class Provisioner(Protocol):
    # True once start() found (or was told) that the backend speaks vLLM's sleep API.
    can_sleep: bool

    async def start(self) -> str:
        """Launch the backend and return its base URL once healthy; raise :class:`StartFailed`."""
        ...

    async def stop(self) -> None:
        """Stop the backend and everything it started; idempotent."""
        ...

    async def sleep(self, level: int) -> None: ...

    async def wake(self) -> None: ...

    async def healthy(self) -> bool: ...

    async def wait_exit(self) -> int:
        """Return the exit code once the backend exits (for whatever reason)."""
        ...

    async def aclose(self) -> None: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def within(work: Awaitable[T], seconds: float, clock: Clock) -> T:
    """Await ``work`` for at most ``seconds`` of ``clock`` time; TimeoutError after (work cancelled)."""
    task = asyncio.ensure_future(work)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait((task, timer), return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        raise
    finally:
        timer.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task
    raise TimeoutError


class PlacementRefused(StartFailed):
    """The cluster has no node with room for the replica (e.g. no free GPU): the start was refused, not broken."""
