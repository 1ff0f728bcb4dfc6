"""Body workers: processes that parse, count and encode large request bodies, so the event loop never does.

Why a process: parsing a 20 MB body (``orjson.loads``) and encoding it again hold the GIL for 50-110 ms
each, and even building one 18-million-character string costs about 20 ms, so a thread cannot keep the
loop under its 20 ms objective. A body larger than ``gateway.large_body_mb`` is therefore streamed to a
worker in the pieces it arrived in; the worker runs the same :mod:`frugalserve.api.admission` steps as the
gateway does for small bodies and streams back the encoded body in pieces of at most 1 MiB, which the
gateway forwards without joining. The loop only ever copies small pieces.

One request is in a worker at a time, in the three steps of :mod:`~frugalserve.api.admission`, because the
gateway must authorize the key before the worker spends seconds counting, and must route ``auto`` between
counting and encoding::

    gateway                              worker
    REQUEST(kind, default) DATA... END ──▶ parse
                                       ◀── MODEL(name)      or ERROR(APIError)
    COUNT(how to count)                ──▶ check, count (and extract routing features)
                                       ◀── COUNTED(small)   or ERROR
    ENCODE(pool config, routed)        ──▶ caps, served model, encode
                                       ◀── ENCODED(prepared) DATA... END  or ERROR
    ABORT, instead of a next step      ──▶ drop the request (the gateway refused it)

A worker that fails, or whose request is abandoned half-way (the client left), is killed; the next large
request starts a fresh one. ``python -m frugalserve.api.worker`` is the worker's entry point; it speaks
only on stdin and stdout, and logs to stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import struct
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any, BinaryIO

from frugalserve.api import admission
from frugalserve.budget.fetch import Fetcher
from frugalserve.budget.limits import FetchLimits
from frugalserve.budget.prepare import Prepared
from frugalserve.config import PoolConfig
from frugalserve.errors import APIError

log = logging.getLogger("frugalserve.worker")

_FRAME = struct.Struct("!cI")  # kind, payload length
PIECE = 1 << 20  # the largest piece of a body in one frame
_SETUP, _REQUEST, _DATA, _END, _MODEL, _COUNT, _COUNTED, _ENCODE, _ENCODED, _ABORT, _ERROR = (
    b"C", b"R", b"D", b"E", b"M", b"N", b"K", b"S", b"P", b"A", b"X"
)  # fmt: skip
_STOP_TIMEOUT_S = 5.0
_NICE = 5


class WorkerFailed(RuntimeError):
    """The worker broke an exchange (it died, or answered out of turn): a bug, answered as a 500."""


class _Process:
    """One worker process and its pipes; used by one request at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        self.writer = proc.stdin
        self.reader = proc.stdout

    def alive(self) -> bool:
        return self.proc.returncode is None

    def write(self, kind: bytes, payload: bytes = b"") -> None:
        self.writer.write(_FRAME.pack(kind, len(payload)))
        if payload:
            self.writer.write(payload)

    async def read(self) -> tuple[bytes, bytes]:
        try:
            kind, size = _FRAME.unpack(await self.reader.readexactly(_FRAME.size))
            return kind, (await self.reader.readexactly(size) if size else b"")
        except asyncio.IncompleteReadError:
            raise WorkerFailed("the body worker exited in the middle of a request") from None

    async def answer(self, expected: bytes) -> bytes:
        kind, payload = await self.read()
        if kind == _ERROR:
            error = pickle.loads(payload)
            if isinstance(error, APIError):
                raise error
            raise WorkerFailed(f"the body worker failed: {error}")
        if kind != expected:
            raise WorkerFailed(f"the body worker answered {kind!r} where {expected!r} was due")
        return payload

    async def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        await self.proc.wait()

    async def stop(self) -> None:
        """Close its stdin (the worker's signal to exit), then wait; kill it if it does not go."""
        if self.alive():
            self.writer.close()
            try:
                await asyncio.wait_for(self.proc.wait(), _STOP_TIMEOUT_S)
            except TimeoutError:
                log.warning("body worker %d did not exit; killing it", self.proc.pid)
        await self.kill()


class Exchange:
    """One request's turn with a worker: :meth:`parse`, :meth:`count`, :meth:`encode`; stopping early aborts."""

    def __init__(self, process: _Process) -> None:
        self._p = process
        self.state = "idle"  # idle: nothing in flight; waiting: the worker waits for the next step; busy

    async def _step(self, kind: bytes, payload: bytes, expected: bytes) -> bytes:
        p = self._p
        self.state = "busy"
        p.write(kind, payload)
        await p.writer.drain()
        try:
            answer = await p.answer(expected)
        except APIError:
            self.state = "idle"  # the worker dropped the request itself
            raise
        self.state = "waiting"
        return answer

    async def parse(self, kind: str, pieces: Sequence[bytes], default_model: str | None) -> str:
        """Send the body; the model it names (or the APIError its JSON or parameters raise)."""
        p = self._p
        self.state = "busy"
        p.write(_REQUEST, pickle.dumps((kind, default_model)))
        sent = 0
        for piece in pieces:
            p.write(_DATA, piece)
            sent += len(piece)
            if sent >= PIECE:  # let the pipe take it before buffering more
                sent = 0
                await p.writer.drain()
        return (await self._step(_END, b"", _MODEL)).decode()

    async def count(self, how: admission.Counting) -> admission.Counted:
        counted: admission.Counted = pickle.loads(await self._step(_COUNT, pickle.dumps(how), _COUNTED))
        return counted

    async def encode(self, pool: PoolConfig, routed: bool) -> tuple[Prepared | None, tuple[bytes, ...]]:
        """The body for ``pool``, in pieces, and the counts after its caps."""
        prepared: Prepared | None = pickle.loads(await self._step(_ENCODE, pickle.dumps((pool, routed)), _ENCODED))
        self.state = "busy"
        body: list[bytes] = []
        while True:
            kind, payload = await self._p.read()
            if kind == _END:
                break
            if kind != _DATA:
                raise WorkerFailed(f"the body worker sent {kind!r} inside a body")
            body.append(payload)
        self.state = "idle"
        return prepared, tuple(body)

    def abort(self) -> None:
        """Tell a worker that waits for the next step to drop the request (the gateway refused it)."""
        if self.state == "waiting":
            self._p.write(_ABORT)
            self.state = "idle"


class BodyWorkers:
    """Up to ``processes`` body workers, started on first use; a request waits for a free one."""

    def __init__(self, processes: int, image_cache_mb: float, counts_tokens: bool) -> None:
        self._slots = asyncio.Semaphore(processes)
        self._setup = pickle.dumps({"image_cache_mb": image_cache_mb, "counts_tokens": counts_tokens})
        self._idle: list[_Process] = []
        self._live: set[_Process] = set()
        self._closed = False
        self.started = 0  # processes started so far (a killed worker is replaced by the next large request)

    @contextlib.asynccontextmanager
    async def exchange(self) -> AsyncIterator[Exchange]:
        """A worker for one request; a refusal between the steps keeps it, anything else mid-way kills it."""
        async with self._slots:
            process = await self._take()
            ex = Exchange(process)
            try:
                yield ex
            except BaseException:
                ex.abort()  # a refusal between steps keeps the worker; anything mid-step kills it (below)
                raise
            finally:
                if ex.state == "idle" and process.alive() and not self._closed:
                    self._idle.append(process)
                else:
                    self._live.discard(process)
                    await asyncio.shield(process.kill())

    async def _take(self) -> _Process:
        while self._idle:
            process = self._idle.pop()
            if process.alive():
                return process
            self._live.discard(process)
            await process.kill()  # reap it
        if self._closed:
            raise WorkerFailed("the gateway is shutting down")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "frugalserve.api.worker",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=2 * PIECE,
        )
        process = _Process(proc)
        process.write(_SETUP, self._setup)
        self._live.add(process)
        self.started += 1
        return process

    def processes(self) -> list[asyncio.subprocess.Process]:
        """The worker processes alive now."""
        return [p.proc for p in self._live]

    async def aclose(self) -> None:
        self._closed = True
        live = list(self._live)
        self._live.clear()
        self._idle.clear()
        await asyncio.gather(*(p.stop() for p in live))


# -- the worker process ------------------------------------------------------------------------------


def _read(inp: BinaryIO) -> tuple[bytes, bytes] | None:
    head = inp.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None  # the gateway closed the pipe: exit
    kind, size = _FRAME.unpack(head)
    payload = inp.read(size) if size else b""
    if len(payload) < size:
        return None
    return kind, payload


def _write(out: BinaryIO, kind: bytes, payload: bytes | memoryview = b"") -> None:
    out.write(_FRAME.pack(kind, len(payload)))
    out.write(payload)


def _error(exc: BaseException) -> bytes:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        raise exc
    if isinstance(exc, APIError):
        return pickle.dumps(exc)
    log.exception("body worker: %s", exc)
    return pickle.dumps(f"{type(exc).__name__}: {exc}")


class _Worker:
    def __init__(self, setup: dict[str, Any]) -> None:
        from frugalserve.budget.images import PreprocessCache

        self.loop = asyncio.new_event_loop()
        self.cache = PreprocessCache(setup["image_cache_mb"])
        self.fetchers: dict[FetchLimits, Fetcher] = {}
        if setup["counts_tokens"]:
            from frugalserve import qwen_vocab

            qwen_vocab.encoding()

    def fetcher(self, limits: FetchLimits) -> Fetcher:
        fetcher = self.fetchers.get(limits)
        if fetcher is None:
            fetcher = self.fetchers[limits] = Fetcher(limits)
        return fetcher

    def serve(self, inp: BinaryIO, out: BinaryIO) -> None:
        while (frame := _read(inp)) is not None:
            kind, payload = frame
            if kind != _REQUEST:
                raise WorkerFailed(f"expected a request, got {kind!r}")
            request_kind, default_model = pickle.loads(payload)
            if not self._one(request_kind, default_model, inp, out):
                return
            out.flush()

    def _next(self, inp: BinaryIO, expected: bytes) -> bytes | None:
        """The next step's payload; None when the gateway aborted the request or closed the pipe."""
        frame = _read(inp)
        if frame is None or frame[0] == _ABORT:
            return None
        if frame[0] != expected:
            raise WorkerFailed(f"expected {expected!r}, got {frame[0]!r}")
        return frame[1]

    def _one(self, kind: str, default_model: str | None, inp: BinaryIO, out: BinaryIO) -> bool:
        """One request; False when the gateway closed the pipe."""
        pieces: list[bytes] = []
        while (frame := _read(inp)) is not None and frame[0] == _DATA:
            pieces.append(frame[1])
        if frame is None:
            return False
        try:
            data, model = admission.parse(kind, b"".join(pieces), default_model)
        except BaseException as exc:
            _write(out, _ERROR, _error(exc))
            return True
        del pieces
        _write(out, _MODEL, model.encode())
        out.flush()
        if (payload := self._next(inp, _COUNT)) is None:
            return True
        how: admission.Counting = pickle.loads(payload)
        try:
            counting = admission.count(kind, data, how, self.fetcher(how.limits.fetch), self.cache)
            counted = self.loop.run_until_complete(counting)
        except BaseException as exc:
            _write(out, _ERROR, _error(exc))
            return True
        _write(out, _COUNTED, pickle.dumps(counted))
        out.flush()
        if (payload := self._next(inp, _ENCODE)) is None:
            return True
        pool, routed = pickle.loads(payload)
        try:
            body = admission.encode(kind, data, pool, counted.prepared, routed)
        except BaseException as exc:
            _write(out, _ERROR, _error(exc))
            return True
        _write(out, _ENCODED, pickle.dumps(counted.prepared))
        for encoded in body:
            view = memoryview(encoded)
            for start in range(0, len(view), PIECE):
                _write(out, _DATA, view[start : start + PIECE])
        _write(out, _END)
        return True

    def close(self) -> None:
        for fetcher in self.fetchers.values():
            self.loop.run_until_complete(fetcher.close())
        self.loop.close()


def main() -> None:
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    # Below the gateway's priority: on a busy machine, seconds of counting must not take the CPU from the loop.
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    sys.stdout = sys.stderr  # a stray print must not corrupt the protocol
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    frame = _read(inp)
    if frame is None or frame[0] != _SETUP:
        return
    worker = _Worker(pickle.loads(frame[1]))
    try:
        worker.serve(inp, out)
    finally:
        worker.close()


if __name__ == "__main__":
    main()
