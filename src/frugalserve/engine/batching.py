"""The scheduler: the one owner of the model thread, its queue and the engine's sleep state.

Static batching per step group: when the model thread is free, every queued request (up to
``max_batch``) is taken and decoded together, left-padded, in one ``generate`` call; each row stops on its
own. Requests that arrive while a group decodes wait (``vllm:num_requests_waiting``) for the next group.
This is simpler than continuous batching and is honest about it: a short request that joins a long
group's successor waits for that group to finish.

States::

    awake     accepts requests; the loop feeds batches to the model thread
    draining  a sleep was asked: new requests get 503, queued and running ones finish
    sleeping  the model thread has run ModelRunner.sleep(level); requests get 503 until wake_up
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from frugalserve.engine.metrics import EngineMetrics
from frugalserve.engine.model import ModelRunner, Prepared, Row
from frugalserve.engine.requests import Sampling
from frugalserve.errors import APIError, ServiceUnavailable

log = logging.getLogger(__name__)


@dataclass
class Event:
    kind: str  # "token" | "finish" | "error"
    text: str = ""
    reason: str | None = None
    completion_tokens: int = 0
    error: APIError | None = None


@dataclass
class Generation:
    """A queued request's handle; its events arrive on ``events`` in the event loop."""

    prepared: Prepared
    sampling: Sampling
    arrived: float = field(default_factory=time.perf_counter)
    events: asyncio.Queue[Event] = field(default_factory=asyncio.Queue)
    cancelled: bool = False
    first_token_at: float | None = None

    @property
    def prompt_tokens(self) -> int:
        return len(self.prepared.input_ids)

    def cancel(self) -> None:
        self.cancelled = True


class Scheduler:
    def __init__(
        self,
        runner: ModelRunner,
        metrics: EngineMetrics,
        executor: ThreadPoolExecutor,
        *,
        max_batch: int = 8,
        max_waiting: int = 256,
        batch_window_s: float = 0.02,
    ) -> None:
        self.runner = runner
        self.metrics = metrics
        self.executor = executor
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.batch_window_s = batch_window_s
        self.state = "awake"
        self.sleep_level = 0
        self._pending: asyncio.Queue[Generation] = asyncio.Queue()
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._control = asyncio.Lock()  # one sleep / wake at a time
        self._task: asyncio.Task[None] | None = None
        self._name = metrics.model_name

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="engine-scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def waiting(self) -> int:
        return self._pending.qsize()

    def ensure_accepting(self) -> None:
        if self.state != "awake":
            raise ServiceUnavailable(
                "the engine is asleep; POST /wake_up first"
                if self.state == "sleeping"
                else "the engine is going to sleep and takes no new requests",
                code="engine_sleeping",
                headers={"Retry-After": "5"},
            )

    def submit(self, prepared: Prepared, sampling: Sampling) -> Generation:
        self.ensure_accepting()
        if self._pending.qsize() >= self.max_waiting:
            raise ServiceUnavailable("the engine's queue is full", code="queue_full", headers={"Retry-After": "1"})
        gen = Generation(prepared, sampling)
        self._idle.clear()
        self._pending.put_nowait(gen)
        self.metrics.waiting.labels(self._name).set(self._pending.qsize())
        return gen

    # -- sleep mode ---------------------------------------------------------------------------------------
    async def sleep(self, level: int) -> None:
        async with self._control:
            if self.state == "sleeping":
                if level <= self.sleep_level:
                    return
                # Deepen level 1 -> 2 without waking in between.
            else:
                self.state = "draining"
                await self._idle.wait()  # unlike vLLM's default, let accepted requests finish
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self.executor, self.runner.sleep, level)
            self.state, self.sleep_level = "sleeping", level
            self.metrics.sleeping.labels(self._name).set(level)
            self.metrics.cache_bytes.labels(self._name).set(0)

    async def wake(self) -> float:
        async with self._control:
            if self.state != "sleeping":
                self.state = "awake"
                return 0.0
            loop = asyncio.get_running_loop()
            seconds = await loop.run_in_executor(self.executor, self.runner.wake)
            self.metrics.wake_seconds.labels(self._name, str(self.sleep_level)).observe(seconds)
            self.state, self.sleep_level = "awake", 0
            self.metrics.sleeping.labels(self._name).set(0)
            return seconds

    # -- the loop ---------------------------------------------------------------------------------------
    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._pending.get()]
            # A short window lets requests that arrive together (a burst) start as one group.
            deadline = loop.time() + self.batch_window_s
            while len(batch) < self.max_batch:
                if self._pending.empty():
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    with contextlib.suppress(TimeoutError):
                        batch.append(await asyncio.wait_for(self._pending.get(), remaining))
                    continue
                batch.append(self._pending.get_nowait())
            batch = [g for g in batch if not self._drop_if_cancelled(g)]
            self.metrics.waiting.labels(self._name).set(self._pending.qsize())
            self._running = len(batch)
            self.metrics.running.labels(self._name).set(len(batch))
            self.metrics.kv_usage.labels(self._name).set(len(batch) / self.max_batch)
            try:
                if batch:
                    rows = [self._row(g, loop) for g in batch]
                    await loop.run_in_executor(self.executor, self.runner.generate_batch, rows)
            except Exception:  # a model failure fails this group, not the engine
                # The details (paths, tensor shapes) go to the log, not to the client.
                log.exception("generation failed for a group of %d requests", len(batch))
                err = APIError("generation failed inside the model; the engine's log has the details")
                for g in batch:
                    g.events.put_nowait(Event("error", error=err))
            finally:
                self._running = 0
                self.metrics.running.labels(self._name).set(0)
                self.metrics.kv_usage.labels(self._name).set(0)
                self.metrics.cache_bytes.labels(self._name).set(self.runner.vision_cache.size)
                if self._pending.empty():
                    self._idle.set()

    def _drop_if_cancelled(self, g: Generation) -> bool:
        if g.cancelled:
            g.events.put_nowait(Event("finish", reason="abort"))
        return g.cancelled

    def _row(self, g: Generation, loop: asyncio.AbstractEventLoop) -> Row:
        s = g.sampling
        self.metrics.prompt_tokens.labels(self._name).inc(g.prompt_tokens)

        def on_token(text: str, n: int) -> None:
            loop.call_soon_threadsafe(self._on_token, g, text, n)

        def on_finish(reason: str, n: int) -> None:
            loop.call_soon_threadsafe(self._on_finish, g, reason, n)

        return Row(
            g.prepared,
            s.max_tokens,
            s.temperature,
            s.top_p,
            s.seed,
            s.stop,
            on_token,
            on_finish,
            cancelled=lambda: g.cancelled,
        )

    def _on_token(self, g: Generation, text: str, n: int) -> None:
        if g.first_token_at is None:
            g.first_token_at = time.perf_counter()
            self.metrics.ttft.labels(self._name).observe(g.first_token_at - g.arrived)
        if text:
            g.events.put_nowait(Event("token", text=text, completion_tokens=n))

    def _on_finish(self, g: Generation, reason: str, n: int) -> None:
        self.metrics.generation_tokens.labels(self._name).inc(n)
        self.metrics.e2e.labels(self._name).observe(time.perf_counter() - g.arrived)
        self.metrics.success.labels(self._name, reason).inc()
        g.events.put_nowait(Event("finish", reason=reason, completion_tokens=n))

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "sleep_level": self.sleep_level,
            "waiting": self.waiting,
            "running": self._running,
        }
