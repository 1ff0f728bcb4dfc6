"""A replica as a local process: :class:`CommandProvisioner` runs ``backend.command`` as a child process
in its own process group, its output appended to a per-replica log file, and gates readiness on
``backend.health_path``. Every exit path (stop, failed start, crash, gateway shutdown) kills the whole
group; on Linux the child also gets SIGKILL if the gateway itself dies (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO

import aiohttp

from frugalserve.clock import Clock
from frugalserve.config import PoolConfig
from frugalserve.lifecycle.provisioners import StartFailed, free_port, within


def _die_with_parent() -> None:  # runs in the child between fork and exec
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class CommandProvisioner:
    """Runs ``backend.command`` (``{port}``, ``{model}`` and ``{python}`` filled in) for one replica."""

    def __init__(self, pool: PoolConfig, replica: str, clock: Clock) -> None:
        self.pool = pool
        self.backend = pool.backend
        self.replica = replica
        self.clock = clock
        self.can_sleep = self.backend.sleep_api == "vllm"
        self.log_path = Path(self.backend.log_dir) / f"{replica}.log"
        self.base_url = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None
        self._session: aiohttp.ClientSession | None = None

    def argv(self, port: int) -> list[str]:
        assert self.backend.command is not None
        line = self.backend.command.replace("{port}", str(port)).replace("{model}", self.pool.model)
        # {python}: the gateway's own interpreter, so a frugalserve engine runs from the same environment.
        line = line.replace("{python}", shlex.quote(sys.executable))
        return shlex.split(line)

    async def start(self) -> str:
        await self.stop()
        port = self.backend.port or free_port()
        argv = self.argv(port)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: ASYNC230 - a local file, opened once per start
        self._log.write(f"\n=== frugalserve: starting {shlex.join(argv)}\n".encode())
        self._log.flush()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.backend.env},
                preexec_fn=_die_with_parent,
            )
        except OSError as exc:
            await self.stop()
            raise StartFailed(f"cannot run {argv[0]!r}: {exc.strerror}") from None
        self.base_url = f"http://127.0.0.1:{port}"
        try:
            await self._wait_healthy()
            if self.backend.sleep_api == "auto":
                self.can_sleep = await self._probe_sleep_api()
        except BaseException:
            await self.stop()
            raise
        return self.base_url

    async def _wait_healthy(self) -> None:
        deadline = self.clock.monotonic() + self.backend.startup_timeout_s
        pause = 0.02
        while True:
            proc = self._proc
            if proc is None or proc.returncode is not None:
                code = proc.returncode if proc is not None else None
                raise StartFailed(f"the backend exited with code {code} before it was healthy (log: {self.log_path})")
            if await self.healthy():
                return
            if self.clock.monotonic() >= deadline:
                raise StartFailed(
                    f"the backend was not healthy within {self.backend.startup_timeout_s:g}s (log: {self.log_path})"
                )
            await self.clock.sleep(pause)
            pause = min(0.25, pause * 1.5)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=2))
        return self._session

    async def _call(self, method: str, path: str, timeout_s: float) -> tuple[int, bytes]:
        async with self._http().request(
            method, self.base_url + path, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as resp:
            return resp.status, await resp.read()

    async def healthy(self) -> bool:
        if not self.base_url:
            return False
        try:
            status, _ = await self._call("GET", self.backend.health_path, 5.0)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        return status == 200

    async def _probe_sleep_api(self) -> bool:
        try:
            status, _ = await self._call("GET", "/is_sleeping", 5.0)
        except (aiohttp.ClientError, TimeoutError, OSError):
            return False
        return status == 200

    async def sleep(self, level: int) -> None:
        status, body = await self._call("POST", f"/sleep?level={level}", self.backend.stop_timeout_s + 60)
        if status != 200:
            raise StartFailed(f"POST /sleep answered {status}: {body[:200]!r}")

    async def wake(self) -> None:
        status, body = await self._call("POST", "/wake_up", self.backend.startup_timeout_s)
        if status != 200:
            raise StartFailed(f"POST /wake_up answered {status}: {body[:200]!r}")

    async def wait_exit(self) -> int:
        proc = self._proc
        if proc is None:
            return 0
        return await proc.wait()

    async def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await within(proc.wait(), self.backend.stop_timeout_s, self.clock)
            # the whole group, even when the leader already exited: children must not outlive it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    async def aclose(self) -> None:
        await self.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None
