"""Body workers: processes that parse, count and encode large request bodies, so the event loop never does.

Why a process: parsing a 20 MB body (``orjson.loads``) and encoding it again hold the GIL for 50-110 ms
each, and even building one 18-million-character string costs about 20 ms, so a thread cannot keep the
loop under its 20 ms objective. A body larger than ``gateway.large_body_mb`` is therefore streamed to a
worker in the pieces it arrived in; the worker runs the same :mod:`frugalserve.api.admission` steps as the
gateway does for small bodies and streams back the encoded body in pieces of at most 1 MiB, which the
gateway forwards without joining. The loop only ever copies small pieces.

One request is in a worker at a time, in two steps, because the gateway must authorize the key for the
model before the worker spends seconds counting::

    gateway                          worker
    REQUEST(kind) DATA... END   ──▶  parse
                                ◀──  MODEL(name)  or  ERROR(APIError)
    SHAPE(pool config)          ──▶  check, count, cap, encode
      or ABORT (key refused)    ◀──  SHAPED(stream, usage, prepared) DATA... END  or  ERROR

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
from frugalserve.api.admission import Shaped
from frugalserve.config import PoolConfig
from frugalserve.errors import APIError

log = logging.getLogger("frugalserve.worker")

_FRAME = struct.Struct("!cI")  # kind, payload length
PIECE = 1 << 20  # the largest piece of a body in one frame
_SETUP, _REQUEST, _DATA, _END, _MODEL, _SHAPE, _ABORT, _SHAPED, _ERROR = (
    b"C", b"R", b"D", b"E", b"M", b"S", b"A", b"P", b"X"
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
    """One request's turn with a worker: :meth:`parse`, then :meth:`shape` (or nothing, which aborts)."""

    def __init__(self, process: _Process) -> None:
        self._p = process
        self.state = "idle"  # idle: nothing in flight; parsed: the worker waits for SHAPE or ABORT; busy

    async def parse(self, kind: str, pieces: Sequence[bytes]) -> str:
        """Send the body; the model it names (or the APIError its JSON or parameters raise)."""
        p = self._p
        self.state = "busy"
        p.write(_REQUEST, kind.encode())
        sent = 0
        for piece in pieces:
            p.write(_DATA, piece)
            sent += len(piece)
            if sent >= PIECE:  # let the pipe take it before buffering more
                sent = 0
                await p.writer.drain()
        p.write(_END)
        await p.writer.drain()
        try:
            model = (await p.answer(_MODEL)).decode()
        except APIError:
            self.state = "idle"
            raise
        self.state = "parsed"
        return model

    async def shape(self, pool: PoolConfig) -> Shaped:
        """Check, count, cap and encode the parsed body for ``pool``."""
        p = self._p
        self.state = "busy"
        p.write(_SHAPE, pickle.dumps(pool))
        await p.writer.drain()
        try:
            stream, client_wants_usage, prepared = pickle.loads(await p.answer(_SHAPED))
        except APIError:
            self.state = "idle"
            raise
        body: list[bytes] = []
        while True:
            kind, payload = await p.read()
            if kind == _END:
                break
            if kind != _DATA:
                raise WorkerFailed(f"the body worker sent {kind!r} inside a body")
            body.append(payload)
        self.state = "idle"
        return Shaped(stream, client_wants_usage, prepared, tuple(body))

    def abort(self) -> None:
        """Tell a worker that waits for SHAPE to drop the request (the gateway refused it)."""
        if self.state == "parsed":
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
                ex.abort()
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
        self.fetchers: dict[str, Any] = {}
        if setup["counts_tokens"]:
            from frugalserve import qwen_vocab

            qwen_vocab.encoding()

    def fetcher(self, pool: PoolConfig) -> Any:
        from frugalserve.budget.fetch import Fetcher

        fetcher = self.fetchers.get(pool.name)
        if fetcher is None:
            fetcher = self.fetchers[pool.name] = Fetcher(pool.limits.fetch)
        return fetcher

    def serve(self, inp: BinaryIO, out: BinaryIO) -> None:
        while (frame := _read(inp)) is not None:
            kind, payload = frame
            if kind != _REQUEST:
                raise WorkerFailed(f"expected a request, got {kind!r}")
            if not self._one(payload.decode(), inp, out):
                return
            out.flush()

    def _one(self, kind: str, inp: BinaryIO, out: BinaryIO) -> bool:
        pieces: list[bytes] = []
        while (frame := _read(inp)) is not None and frame[0] == _DATA:
            pieces.append(frame[1])
        if frame is None:
            return False
        try:
            data, model = admission.parse(kind, b"".join(pieces))
        except BaseException as exc:
            _write(out, _ERROR, _error(exc))
            return True
        del pieces
        _write(out, _MODEL, model.encode())
        out.flush()
        frame = _read(inp)
        if frame is None:
            return False
        if frame[0] == _ABORT:
            return True
        pool: PoolConfig = pickle.loads(frame[1])
        try:
            shaped = self.loop.run_until_complete(admission.shape(kind, data, pool, self.fetcher(pool), self.cache))
        except BaseException as exc:
            _write(out, _ERROR, _error(exc))
            return True
        _write(out, _SHAPED, pickle.dumps((shaped.stream, shaped.client_wants_usage, shaped.prepared)))
        for encoded in shaped.body:
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
