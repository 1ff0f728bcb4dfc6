"""frugalserve.tasks.race: the winner's outcome propagates, the loser is cancelled and awaited."""

from __future__ import annotations

import asyncio

import pytest

from frugalserve.tasks import First, Second, race


class Probe:
    """An awaitable's life seen from outside: started, finished, cancelled, and still running."""

    def __init__(self) -> None:
        self.started = asyncio.Event()
        self.cancelled = False
        self.finished = False

    async def value_after(self, seconds: float, value: object) -> object:
        self.started.set()
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            self.finished = True
        return value

    async def raise_after(self, seconds: float, exc: BaseException) -> None:
        self.started.set()
        await asyncio.sleep(seconds)
        raise exc


async def test_first_to_finish_wins_and_the_loser_is_cancelled_and_awaited() -> None:
    slow = Probe()
    won = await race(Probe().value_after(0, "fast"), slow.value_after(60, "slow"))
    assert won == First("fast")
    assert slow.cancelled and slow.finished, "the loser ran to its end (cancelled) before race returned"

    slow = Probe()
    won2 = await race(slow.value_after(60, "slow"), Probe().value_after(0, "fast"))
    assert won2 == Second("fast")
    assert slow.cancelled and slow.finished


async def test_the_winners_exception_propagates_and_the_loser_is_cancelled() -> None:
    slow = Probe()
    with pytest.raises(KeyError, match="boom"):
        await race(Probe().raise_after(0, KeyError("boom")), slow.value_after(60, None))
    assert slow.cancelled and slow.finished


async def test_an_exception_of_the_loser_is_swallowed() -> None:
    async def fails_on_cancel() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            raise RuntimeError("cleanup failed") from None

    assert await race(asyncio.sleep(0, "ok"), fails_on_cancel()) == First("ok")


async def test_cancelling_the_caller_cancels_both() -> None:
    a, b = Probe(), Probe()
    caller = asyncio.ensure_future(race(a.value_after(60, 1), b.value_after(60, 2)))
    await a.started.wait()
    await b.started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert a.cancelled and a.finished and b.cancelled and b.finished


async def test_a_result_of_the_first_that_lost_goes_to_discard() -> None:
    released: list[str] = []
    disconnect = asyncio.get_running_loop().create_future()
    disconnect.set_result(None)

    # The second finished first, but the first still produces a result while being cancelled: that
    # result is not wanted and is handed over for release.
    async def completes_when_cancelled() -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "late lease"  # swallowed the cancel: a result nobody asked for
        return "never"

    won = await race(completes_when_cancelled(), disconnect, discard=released.append)
    assert won == Second(None)
    assert released == ["late lease"]


async def test_a_result_produced_while_the_caller_is_cancelled_goes_to_discard() -> None:
    released: list[str] = []
    started = asyncio.Event()

    async def acquire() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return "lease"
        return "never"

    caller = asyncio.ensure_future(race(acquire(), asyncio.sleep(60), discard=released.append))
    await started.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert released == ["lease"]


async def test_no_discard_for_a_result_the_caller_gets() -> None:
    released: list[str] = []
    won = await race(asyncio.sleep(0, "lease"), asyncio.sleep(60), discard=released.append)
    assert won == First("lease") and released == []
