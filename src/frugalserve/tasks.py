"""Racing two awaitables: the first to finish wins, the other is cancelled and awaited.

The gateway races work against an event that makes it pointless (a client that disconnects, a timer):
``asyncio.wait(FIRST_COMPLETED)`` alone leaves the loser running, its exception unretrieved, and a
result it produced at the last moment (a lease, an open upstream response) unreleased. :func:`race`
does the whole pattern once:

- the winner's result is returned, tagged :class:`First` or :class:`Second`; its exception propagates;
- the loser is cancelled and awaited; whatever it still raises is swallowed (it lost);
- a result the first awaitable produced but nobody will use (it lost, or the caller was cancelled)
  goes to ``discard``, so a resource is never leaked by the race itself;
- cancelling the caller cancels and awaits both.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

A = TypeVar("A")
B = TypeVar("B")


@dataclass(frozen=True, slots=True)
class First(Generic[A]):
    """The first awaitable of :func:`race` finished first, with this result."""

    value: A


@dataclass(frozen=True, slots=True)
class Second(Generic[B]):
    """The second awaitable of :func:`race` finished first, with this result."""

    value: B


async def race(
    first: Awaitable[A],
    second: Awaitable[B],
    *,
    discard: Callable[[A], object] | None = None,
) -> First[A] | Second[B]:
    """Await both; return the first to finish (``first`` when both are done), cancel the other.

    ``discard`` receives a result of ``first`` that is thrown away: when ``second`` won but ``first``
    completed anyway, or when the caller was cancelled after ``first`` completed.
    """
    a = asyncio.ensure_future(first)
    b = asyncio.ensure_future(second)
    try:
        await asyncio.wait((a, b), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # the caller was cancelled: nobody wants either result
        _abandon(a, discard)
        _abandon(b, None)
        await asyncio.wait((a, b))
        raise
    if a.done():
        _abandon(b, None)
        try:
            await asyncio.wait((b,))
        except BaseException:  # cancelled while the loser finished: the winner's result is unused
            _abandon(a, discard)
            raise
        return First(a.result())
    _abandon(a, discard)
    await asyncio.wait((a,))
    return Second(b.result())


def _abandon(task: asyncio.Future[Any], discard: Callable[[Any], object] | None) -> None:
    """Cancel a loser; once it is done, retrieve its exception and hand an unused result to ``discard``."""

    def settle(t: asyncio.Future[Any]) -> None:
        if t.cancelled() or t.exception() is not None:  # reading the exception marks it retrieved
            return
        if discard is not None:
            discard(t.result())

    if task.done():
        settle(task)
    else:
        task.add_done_callback(settle)
        task.cancel()


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task its owner is stopping and wait until it has ended (None: nothing to stop)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
